//! A session's outbound side: what actors push toward a client's socket.
//!
//! Each session has a bounded queue of [`Outbound`] items drained by the
//! socket writer, bounded in items and in bytes ([`LiveBytes`]). Producers
//! never wait on it: when it is full the client is too slow, and the
//! session is closed with 1013 through its [`CloseSignal`] instead of
//! growing memory. `sync` replays use a second, small queue that
//! the replaying task does wait on ([`SyncItem`]).
//!
//! Nothing orders the two queues against each other: with several producers
//! on the live queue, the writer can find it empty (a slot claimed by one
//! producer and not yet written hides a finished push of another) while a
//! later sync item is already there. So a replay puts its start on the live
//! queue and waits until the writer has taken it in
//! ([`OutboundTx::start_sync`]) before it sends anything on the sync queue,
//! and the writer takes a start only after the sync items already queued,
//! which are the previous replay's ([`OutboundRx::next`]).

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use parley_protocol::ws::{ServerEvent, CLOSE_TRY_AGAIN};

use crate::budget::Reservation;
use crate::metrics::GaugedBytes;

/// An event's bytes counted in `parley_live_event_bytes` from its creation
/// until the last holder of the event lets it go.
fn live_bytes_of(json: &str) -> GaugedBytes {
    GaugedBytes::new(&crate::metrics::METRICS.live_event_bytes, json.len())
}

/// A `message` event as queued for every recipient: one allocation shared
/// by all of them.
#[derive(Debug)]
pub struct LiveMessage {
    /// Room of the message.
    pub room_id: Arc<str>,
    /// Seq of the message.
    pub seq: u64,
    /// The serialized `message` event.
    pub json: Arc<str>,
    _counted: GaugedBytes,
}

impl LiveMessage {
    /// A message just committed (or just arrived from its room's node):
    /// its bytes count in the node's live-event bytes until the last
    /// holder lets it go, once however many sessions share it.
    pub fn live(room_id: Arc<str>, seq: u64, json: Arc<str>) -> Self {
        LiveMessage {
            room_id,
            seq,
            _counted: live_bytes_of(&json),
            json,
        }
    }

    /// A message read back for a replay: not counted as live, its page's
    /// bytes are in the unsent budget.
    pub fn replayed(room_id: Arc<str>, seq: u64, json: Arc<str>) -> Self {
        LiveMessage {
            room_id,
            seq,
            json,
            _counted: GaugedBytes::new(&crate::metrics::METRICS.live_event_bytes, 0),
        }
    }
}

/// A frame of at least [`LARGE_FRAME`] bytes (a `room` snapshot of a big
/// room, sent on every change to every member): counted in the node's
/// live-event bytes like a live message, once however many sessions share
/// it, until the last holder lets it go.
#[derive(Debug)]
pub struct LargeFrame {
    /// The serialized event.
    pub json: Arc<str>,
    _counted: GaugedBytes,
}

/// The smallest frame counted as a [`LargeFrame`]; smaller ones (acks,
/// receipts, presence, typing) are bounded by the queues' event counts.
pub const LARGE_FRAME: usize = 4096;

impl LargeFrame {
    fn new(json: Arc<str>) -> Self {
        LargeFrame {
            _counted: live_bytes_of(&json),
            json,
        }
    }
}

/// Event bytes on their way to clients on the node now: live messages
/// (see [`LiveMessage::live`]), large frames ([`LargeFrame`]) and what
/// socket writers hold back.
pub fn message_bytes() -> usize {
    let metrics = &crate::metrics::METRICS;
    let bytes = metrics.live_event_bytes.load(Ordering::Relaxed)
        + metrics.held_message_bytes.load(Ordering::Relaxed);
    usize::try_from(bytes).unwrap_or(0)
}

/// A room and a seq: what a head notice and the end of a replay carry.
#[derive(Debug)]
pub struct RoomSeq {
    /// The room.
    pub room_id: Arc<str>,
    /// The seq.
    pub seq: u64,
}

/// The start of a replay: what the writer needs to hold and merge.
#[derive(Debug)]
pub struct SyncStart {
    /// The rooms replayed, each after the seq the client has.
    pub rooms: Vec<(Arc<str>, u64)>,
    /// A client's `sync` (not a gap repair).
    pub client: bool,
    /// Tells the replay that the writer holds the rooms now (see [`SyncStart::taken`]).
    taken: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl SyncStart {
    /// A start, and what its replay waits on until the writer has taken it in.
    pub fn new(rooms: Vec<(Arc<str>, u64)>, client: bool) -> (Arc<Self>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let start = SyncStart {
            rooms,
            client,
            taken: std::sync::Mutex::new(Some(tx)),
        };
        (Arc::new(start), rx)
    }

    /// The writer has taken the start in (its rooms are held): the replay
    /// may send its items now.
    pub fn taken(&self) {
        if let Some(tx) = self.taken.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(());
        }
    }
}

/// One item for the socket writer.
///
/// Kept at two words plus a tag: a session's queue allocates room for 32
/// items up front, and that block is part of every idle connection's memory.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A ready JSON text frame (any event but `message` and `typing`).
    Frame(Arc<str>),
    /// The same, of at least [`LARGE_FRAME`] bytes (see [`Outbound::frame`]).
    Large(Arc<LargeFrame>),
    /// A `typing` event; carries its room, typist and state so the writer
    /// can end an indicator its room never ends (see `typing_watch`).
    Typing(Arc<TypingNotice>),
    /// A live `message` event; carries its room and seq so the writer can
    /// order it against `sync` replays and drop duplicates.
    Message(Arc<LiveMessage>),
    /// A replay of these rooms is starting: hold their live messages.
    SyncStart(Arc<SyncStart>),
    /// The client made a request other than `sync`: stop holding live
    /// messages for a first `sync`.
    OpenGate,
    /// The room's owner has committed up to this seq (sent to a node that
    /// just came into its view): a connection that wrote less of the room
    /// lost deliveries on the way and replays them from storage.
    Head(Arc<RoomSeq>),
}

/// A `typing` event and what it is about.
#[derive(Debug)]
pub struct TypingNotice {
    /// Room.
    pub room_id: Arc<str>,
    /// The typist.
    pub user_id: Arc<str>,
    /// Typing (`true`) or stopped.
    pub active: bool,
    /// The serialized event.
    pub json: Arc<str>,
}

impl TypingNotice {
    /// The notice of `user_id` typing (or not) in `room_id`, with its event.
    pub fn new(room_id: Arc<str>, user_id: Arc<str>, active: bool) -> Self {
        let json = ServerEvent::Typing {
            room_id: room_id.to_string(),
            user_id: user_id.to_string(),
            active,
        }
        .to_json();
        TypingNotice {
            room_id,
            user_id,
            active,
            json: Arc::from(json),
        }
    }
}

/// One item of a `sync` replay (as small as [`Outbound`], for the same reason).
#[derive(Debug, Clone)]
pub enum SyncItem {
    /// A replayed `message` event.
    Message(Arc<LiveMessage>),
    /// The replay of a room after a seq (the client has every message up
    /// to it) is complete: release its held live messages, unless they or
    /// a head notice still show a gap.
    RoomDone(Arc<RoomSeq>),
    /// The replay of a room stopped short (storage failed, or the user left
    /// the room): release its held live messages as they are.
    RoomReleased(Arc<str>),
    /// The whole replay is complete; the `synced` frame to send.
    Done(Arc<str>),
    /// The messages queued before it are the writer's now: the bytes
    /// reserved for their page go back when the writer drops this.
    PageTaken(Arc<Reservation>),
}

/// Out-of-band request to close a session's socket with a close code.
#[derive(Debug, Default)]
pub struct CloseSignal {
    code: AtomicU16,
    notify: Notify,
}

impl CloseSignal {
    /// Asks the writer to close with `code` (the first request wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// The requested close code, if any.
    pub fn requested(&self) -> Option<u16> {
        match self.code.load(Ordering::SeqCst) {
            0 => None,
            c => Some(c),
        }
    }

    /// Waits until a close is requested; returns its code.
    pub async fn wait(&self) -> u16 {
        loop {
            // Register interest before checking, so a close between the
            // check and the wait is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(c) = self.requested() {
                return c;
            }
            notified.await;
        }
    }
}

/// How far behind in bytes a session may fall before it is closed with 1013.
#[derive(Debug, Clone, Copy)]
pub struct QueueBytes {
    /// The most one session's live queue holds (one event always fits).
    pub per_session: usize,
    /// Message bytes on the node ([`message_bytes`]) past which a session
    /// more than [`BEHIND_FLOOR`] behind is closed at its next event; 0: no
    /// limit.
    pub node_messages: usize,
}

impl QueueBytes {
    /// Whether a session `behind` bytes behind (queued, or held back by its
    /// writer) is too far behind for a node holding too many messages.
    pub fn too_far_behind(&self, behind: usize) -> bool {
        behind > BEHIND_FLOOR && self.node_messages > 0 && message_bytes() > self.node_messages
    }
}

/// How far behind a session may be, in queued bytes, and stay open while
/// the node holds more live messages than it may: a client reading along
/// is a few events behind at most.
pub const BEHIND_FLOOR: usize = 1 << 20;

/// The bytes of events waiting in a session's live queue, and their bound.
///
/// Most queued events are shared with other recipients (one allocation per
/// message for a whole room), but not all: in a room of one, or a user's
/// own rooms, a client that stops reading holds every message sent there
/// until its queue is full, up to `--outbound-queue` events of up to 16 KB.
/// Counting bytes closes it sooner when the events are large. And since
/// many such sessions (of many accounts, each in rooms of their own) could
/// together hold far more than any one may, a session that is far behind
/// is also closed while the node as a whole holds too many messages.
#[derive(Debug)]
pub struct LiveBytes {
    queued: AtomicUsize,
    max: QueueBytes,
}

impl LiveBytes {
    /// Counts `bytes` in; false (and nothing counted) if that passes the
    /// session's bound, or takes the session past [`BEHIND_FLOOR`] while
    /// the node holds too many messages ([`QueueBytes::too_far_behind`]).
    /// An event always fits an empty queue, whatever its size.
    fn add(&self, bytes: usize) -> bool {
        let before = self.queued.fetch_add(bytes, Ordering::Relaxed);
        let after = before.saturating_add(bytes);
        let over_session = before > 0 && after > self.max.per_session;
        if over_session || self.max.too_far_behind(after) {
            self.remove(bytes);
            return false;
        }
        true
    }

    /// Counts `bytes` out.
    fn remove(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

impl Outbound {
    /// A ready frame: a [`LargeFrame`] (counted node-wide) when it is at
    /// least [`LARGE_FRAME`] bytes.
    pub fn frame(json: Arc<str>) -> Outbound {
        if json.len() >= LARGE_FRAME {
            Outbound::Large(Arc::new(LargeFrame::new(json)))
        } else {
            Outbound::Frame(json)
        }
    }

    /// The bytes this item will write (what it counts in [`LiveBytes`]).
    pub fn bytes(&self) -> usize {
        match self {
            Outbound::Frame(json) => json.len(),
            Outbound::Large(f) => f.json.len(),
            Outbound::Typing(t) => t.json.len(),
            Outbound::Message(m) => m.json.len(),
            Outbound::SyncStart(_) | Outbound::OpenGate | Outbound::Head(_) => 0,
        }
    }
}

/// The handle producers use to reach one session's socket.
#[derive(Debug, Clone)]
pub struct OutboundTx {
    live: mpsc::Sender<Outbound>,
    sync: mpsc::Sender<SyncItem>,
    close: Arc<CloseSignal>,
    bytes: Arc<LiveBytes>,
}

/// The writer's ends of a session's queues.
#[derive(Debug)]
pub struct OutboundRx {
    /// Live events.
    live: mpsc::Receiver<Outbound>,
    /// Sync replays.
    sync: mpsc::Receiver<SyncItem>,
    /// Close requests.
    pub close: Arc<CloseSignal>,
    /// A replay's start taken from `live` and not yet handed out.
    start: Option<Outbound>,
    /// Bytes in `live`.
    bytes: Arc<LiveBytes>,
}

/// Counts an item taken from a live queue out of the queued-frames gauge.
fn dequeued() {
    crate::metrics::METRICS
        .outbound_queued
        .fetch_sub(1, Ordering::Relaxed);
}

/// An item the writer takes next, from either queue.
#[derive(Debug)]
pub enum Next {
    /// From the live queue.
    Live(Outbound),
    /// From the sync queue.
    Sync(SyncItem),
}

impl OutboundRx {
    /// Waits for the next item, live ones first, except that a replay's
    /// start waits until the items earlier replays already queued are out
    /// (a replay's last items are sent before the next replay starts, but
    /// on the other queue). `None` once no live item can come any more (the
    /// session is gone). Cancel-safe: nothing is lost if it is dropped.
    pub async fn next(&mut self) -> Option<Next> {
        loop {
            if let Some(next) = self.held_start() {
                return Some(next);
            }
            let item = tokio::select! {
                biased;
                item = self.live.recv() => item?,
                Some(item) = self.sync.recv() => return Some(Next::Sync(item)),
            };
            if let Some(item) = self.admit(item) {
                return Some(Next::Live(item));
            }
        }
    }

    /// The next item ready now, in the order of [`OutboundRx::next`]
    /// (for a closing connection writing what is still queued).
    pub fn try_next(&mut self) -> Option<Next> {
        loop {
            if let Some(next) = self.held_start() {
                return Some(next);
            }
            match self.live.try_recv() {
                Ok(item) => {
                    if let Some(item) = self.admit(item) {
                        return Some(Next::Live(item));
                    }
                }
                Err(_) => return self.sync.try_recv().ok().map(Next::Sync),
            }
        }
    }

    /// The next live item if one is ready now; a replay's start is left
    /// for [`OutboundRx::next`] (it may have to wait).
    pub fn try_next_live(&mut self) -> Option<Outbound> {
        if self.start.is_some() {
            return None;
        }
        let item = self.live.try_recv().ok()?;
        self.admit(item)
    }

    /// The sync items queued before the held-back start, then the start.
    fn held_start(&mut self) -> Option<Next> {
        self.start.as_ref()?;
        if let Ok(item) = self.sync.try_recv() {
            return Some(Next::Sync(item));
        }
        self.start.take().map(Next::Live)
    }

    /// Counts an item taken from the live queue out of the gauge; holds a
    /// replay's start back (`None`).
    fn admit(&mut self, item: Outbound) -> Option<Outbound> {
        dequeued();
        self.bytes.remove(item.bytes());
        if let Outbound::SyncStart(_) = item {
            self.start = Some(item);
            return None;
        }
        Some(item)
    }
}

impl OutboundRx {
    /// Takes out every live item still queued (a replay's start included,
    /// which `try_next_live` would stop at); returns how many.
    fn drain_live(&mut self) -> usize {
        let mut n = 0;
        while let Ok(item) = self.live.try_recv() {
            dequeued();
            self.bytes.remove(item.bytes());
            n += 1;
        }
        n
    }
}

impl Drop for OutboundRx {
    fn drop(&mut self) {
        // What was queued and never written leaves the gauge too.
        self.drain_live();
    }
}

/// Result of pushing to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Queued.
    Queued,
    /// Queue full: the session was told to close with 1013.
    Overflow,
    /// The session is gone.
    Closed,
}

/// Creates a session's outbound queues with room for `capacity` live items
/// within `max_bytes`.
pub fn channel(capacity: usize, max_bytes: QueueBytes) -> (OutboundTx, OutboundRx) {
    let (live_tx, live_rx) = mpsc::channel(capacity.max(1));
    let (sync_tx, sync_rx) = mpsc::channel(64);
    let close = Arc::new(CloseSignal::default());
    let bytes = Arc::new(LiveBytes {
        queued: AtomicUsize::new(0),
        max: max_bytes,
    });
    (
        OutboundTx {
            live: live_tx,
            sync: sync_tx,
            close: close.clone(),
            bytes: bytes.clone(),
        },
        OutboundRx {
            live: live_rx,
            sync: sync_rx,
            close,
            start: None,
            bytes,
        },
    )
}

impl OutboundTx {
    /// Queues an item without waiting; a queue full of items or of bytes
    /// closes the session with 1013.
    pub fn push(&self, item: Outbound) -> Push {
        let bytes = item.bytes();
        if !self.bytes.add(bytes) {
            if self.live.is_closed() {
                return Push::Closed;
            }
            self.close.close(CLOSE_TRY_AGAIN);
            return Push::Overflow;
        }
        match self.live.try_send(item) {
            Ok(()) => {
                crate::metrics::METRICS
                    .outbound_queued
                    .fetch_add(1, Ordering::Relaxed);
                Push::Queued
            }
            Err(e) => {
                self.bytes.remove(bytes);
                match e {
                    mpsc::error::TrySendError::Full(_) => {
                        self.close.close(CLOSE_TRY_AGAIN);
                        Push::Overflow
                    }
                    mpsc::error::TrySendError::Closed(_) => Push::Closed,
                }
            }
        }
    }

    /// Queues a ready frame (see [`OutboundTx::push`]).
    pub fn frame(&self, json: impl Into<Arc<str>>) -> Push {
        self.push(Outbound::frame(json.into()))
    }

    /// Queues a sync item, waiting for space. Returns false when the session is gone.
    pub async fn sync(&self, item: SyncItem) -> bool {
        self.sync.send(item).await.is_ok()
    }

    /// Starts a replay of `rooms` (see [`SyncStart`]): queues the start on
    /// the live queue and waits until the writer has taken it in, so that
    /// no sync item can overtake it. False when the session is gone (or was
    /// just closed for a full queue).
    pub async fn start_sync(&self, rooms: Vec<(Arc<str>, u64)>, client: bool) -> bool {
        let (start, taken) = SyncStart::new(rooms, client);
        if self.push(Outbound::SyncStart(start)) != Push::Queued {
            return false;
        }
        // A writer that stops drops the start unanswered: `Err`.
        taken.await.is_ok()
    }

    /// Asks the writer to close the socket with `code`.
    pub fn close(&self, code: u16) {
        self.close.close(code);
    }

    /// Waits until a close of this session is requested; returns its code.
    pub async fn closed(&self) -> u16 {
        self.close.wait().await
    }

    /// Waits until the session's writer has gone away.
    pub async fn gone(&self) {
        self.sync.closed().await
    }

    /// Whether the session's writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.live.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound per session only.
    fn per_session(bytes: usize) -> QueueBytes {
        QueueBytes {
            per_session: bytes,
            node_messages: 0,
        }
    }

    /// Every idle connection pays for 32 slots of each queue up front, so the
    /// items stay at three words (they were five before).
    #[test]
    fn a_queue_full_of_bytes_closes_the_session_and_frees_what_it_took() {
        let (tx, mut rx) = channel(100, per_session(100));
        let frame = |n: usize| Outbound::Frame(Arc::from("x".repeat(n)));
        assert_eq!(tx.push(frame(150)), Push::Queued, "one item always fits");
        assert_eq!(tx.push(frame(1)), Push::Overflow);
        assert_eq!(tx.close.requested(), Some(CLOSE_TRY_AGAIN));
        assert!(rx.try_next_live().is_some());
        assert_eq!(rx.bytes.queued(), 0);
        assert_eq!(tx.push(frame(60)), Push::Queued);
        assert_eq!(tx.push(frame(40)), Push::Queued);
        assert_eq!(rx.bytes.queued(), 100);
        assert_eq!(tx.push(frame(1)), Push::Overflow);
        drop(rx);
        assert_eq!(tx.push(frame(1)), Push::Closed);
        assert_eq!(
            tx.bytes.queued(),
            0,
            "what was queued and never written is counted out"
        );
    }

    #[test]
    fn a_session_far_behind_is_closed_while_the_node_holds_too_many_messages() {
        // Other tests' messages only add to the node's count, never take ours away.
        let held = Arc::new(LiveMessage::live(
            Arc::from("r1"),
            1,
            Arc::from("m".repeat(2 * BEHIND_FLOOR)),
        ));
        assert!(message_bytes() >= 2 * BEHIND_FLOOR);
        let (tx, _rx) = channel(
            100,
            QueueBytes {
                per_session: usize::MAX,
                node_messages: BEHIND_FLOOR,
            },
        );
        let frame = |n: usize| Outbound::Frame(Arc::from("x".repeat(n)));
        assert_eq!(
            tx.push(frame(BEHIND_FLOOR / 2)),
            Push::Queued,
            "a session less than the floor behind stays"
        );
        assert_eq!(tx.push(frame(BEHIND_FLOOR / 2)), Push::Queued);
        assert_eq!(tx.push(frame(1)), Push::Overflow, "past the floor it goes");
        assert_eq!(tx.close.requested(), Some(CLOSE_TRY_AGAIN));
        // The same rule for what a writer holds back.
        let bytes = tx.bytes.max;
        assert!(bytes.too_far_behind(BEHIND_FLOOR + 1) && !bytes.too_far_behind(BEHIND_FLOOR));
        drop(held);
    }

    #[test]
    fn large_frames_are_counted_once_and_small_ones_stay_plain() {
        let small = Outbound::frame(Arc::from("x".repeat(LARGE_FRAME - 1)));
        assert!(matches!(small, Outbound::Frame(_)));
        let large = Outbound::frame(Arc::from("x".repeat(4 * BEHIND_FLOOR)));
        let Outbound::Large(shared) = &large else {
            panic!("not counted: {large:?}");
        };
        let copies = [Arc::clone(shared), Arc::clone(shared)];
        // Other tests hold a few MiB at most; this one is counted once.
        assert!(message_bytes() >= 4 * BEHIND_FLOOR);
        assert!(message_bytes() < 8 * BEHIND_FLOOR + (4 << 20));
        drop((large, copies));
    }

    #[test]
    fn replayed_messages_are_not_counted_as_live() {
        let before = message_bytes();
        let replayed = LiveMessage::replayed(Arc::from("r1"), 1, Arc::from("m".repeat(64 << 20)));
        // Other tests hold a few MiB at most, however their counts move.
        assert!(message_bytes() < before + (32 << 20));
        drop(replayed);
    }

    #[test]
    fn queue_items_stay_small() {
        assert!(std::mem::size_of::<Outbound>() <= 24);
        assert!(std::mem::size_of::<SyncItem>() <= 24);
    }

    #[tokio::test]
    async fn a_replay_starts_only_once_the_writer_took_its_start_in() {
        let (tx, mut rx) = channel(4, per_session(usize::MAX));
        let starting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.start_sync(Vec::new(), true).await }
        });
        let Some(Outbound::SyncStart(start)) = rx.live.recv().await else {
            panic!("the start is queued live");
        };
        tokio::task::yield_now().await;
        assert!(!starting.is_finished(), "the replay waits for the writer");
        start.taken();
        assert!(starting.await.unwrap());
        // A writer that goes away without taking the start in ends the replay.
        let starting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.start_sync(Vec::new(), false).await }
        });
        while rx.live.is_empty() {
            tokio::task::yield_now().await;
        }
        drop(rx);
        assert!(!starting.await.unwrap());
        assert!(!tx.start_sync(Vec::new(), true).await, "no writer at all");
    }

    /// The writer finds the live queue empty now and then while a finished
    /// push waits behind another producer's unwritten slot. A replay's items
    /// must still never overtake its start (which left rooms held for
    /// ever: CI saw a live session get none of its room's messages).
    #[test]
    fn no_sync_item_overtakes_its_start() {
        use std::sync::atomic::AtomicBool;
        const REPLAYS: u64 = 1_000;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let (tx, mut rx) = channel(4096, per_session(usize::MAX));
        let stop = Arc::new(AtomicBool::new(false));
        // Other producers (rooms, presence) pushing all the while.
        let noise: Vec<_> = (0..2)
            .map(|_| {
                let (tx, stop) = (tx.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if tx.live.capacity() > 4096 - 32 {
                            tx.frame("noise");
                        } else {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let overtaken = runtime.block_on(async move {
            let replays = tokio::spawn(async move {
                for i in 0..REPLAYS {
                    let room: Arc<str> = Arc::from(i.to_string());
                    if !tx.start_sync(vec![(room.clone(), 0)], true).await {
                        break;
                    }
                    let done = SyncItem::RoomDone(Arc::new(RoomSeq {
                        room_id: room,
                        seq: 0,
                    }));
                    if !tx.sync(done).await {
                        break;
                    }
                }
            });
            let (mut started, mut done, mut overtaken) = (None, 0, 0);
            while done < REPLAYS {
                match rx.next().await {
                    Some(Next::Live(Outbound::SyncStart(start))) => {
                        started = start.rooms.first().map(|(r, _)| r.clone());
                        start.taken();
                    }
                    Some(Next::Sync(SyncItem::RoomDone(end))) => {
                        done += 1;
                        if started.as_ref() != Some(&end.room_id) {
                            overtaken += 1;
                        }
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            assert_eq!(rx.close.requested(), None, "the queue never overflowed");
            drop(rx);
            let _ = replays.await;
            overtaken
        });
        stop.store(true, Ordering::Relaxed);
        for t in noise {
            t.join().unwrap();
        }
        assert_eq!(overtaken, 0, "of {REPLAYS} replays");
    }

    /// A closing connection counts every item it never wrote out of the
    /// queued-frames gauge, past a replay's start too.
    #[test]
    fn a_closing_writer_drains_past_a_replay_start() {
        let (tx, mut rx) = channel(8, per_session(usize::MAX));
        tx.frame("a");
        tx.push(Outbound::SyncStart(SyncStart::new(Vec::new(), true).0));
        tx.frame("b");
        assert!(matches!(rx.try_next_live(), Some(Outbound::Frame(_))));
        assert!(rx.try_next_live().is_none(), "the start waits for `next`");
        assert_eq!(rx.drain_live(), 1, "b, after the start");
    }

    /// A closing connection writes everything still queued, in `next`'s
    /// order: earlier sync items, the held-back start, then what follows.
    #[tokio::test]
    async fn a_closing_writer_takes_everything_past_a_replay_start() {
        let (tx, mut rx) = channel(8, per_session(usize::MAX));
        tx.push(Outbound::SyncStart(SyncStart::new(Vec::new(), true).0));
        tx.frame("a");
        assert!(tx.sync(SyncItem::Done(Arc::from("synced"))).await);
        assert!(rx.try_next_live().is_none());
        let kinds: Vec<&str> = std::iter::from_fn(|| rx.try_next())
            .map(|n| match n {
                Next::Sync(_) => "sync",
                Next::Live(Outbound::SyncStart(_)) => "start",
                Next::Live(_) => "live",
            })
            .collect();
        assert_eq!(kinds, ["sync", "start", "live"]);
    }

    #[test]
    fn full_queue_closes_with_1013_and_keeps_order() {
        let (tx, mut rx) = channel(2, per_session(usize::MAX));
        assert_eq!(tx.frame("a"), Push::Queued);
        assert_eq!(tx.frame("b"), Push::Queued);
        assert_eq!(tx.frame("c"), Push::Overflow);
        assert_eq!(rx.close.requested(), Some(CLOSE_TRY_AGAIN));
        let texts: Vec<String> = std::iter::from_fn(|| rx.try_next_live())
            .map(|item| match item {
                Outbound::Frame(json) => json.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["a", "b"]);
        drop(rx);
        assert_eq!(tx.frame("d"), Push::Closed);
    }
}
