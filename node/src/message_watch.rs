//! A bound on WebSocket messages clients leave unfinished.
//!
//! The WebSocket library keeps every byte of a message until its last one
//! arrives. A client can send all of a 64 KiB frame but one byte and stop:
//! without a bound, that is 64 KiB held per session for as long as the
//! socket stays open, and a few hundred accounts with their sessions could
//! make a node hold gigabytes that way.
//!
//! [`MessageWatch`] sits between the upgraded socket and the library and
//! follows the client's frames ([`FrameTracker`]). It holds each message to
//! two rules:
//! - **a time limit** (`--ws-message-timeout-secs`): a message (or a
//!   control frame) must be complete within it of its first byte, or the
//!   connection ends ([`Unfinished::Stalled`], closed with 1008);
//! - **a byte budget**: a message whose headers state more than
//!   [`SMALL_MESSAGE`] reserves that many bytes, under a share per user and
//!   a limit for the node ([`ByteBudget`]), until its last byte is in. Over
//!   either, nothing more is read from that socket (what the client sends
//!   stays in its own buffers and the kernel's) until room is made; if
//!   none is made within the time limit, the connection ends
//!   ([`Unfinished::NoRoom`], 1013).
//!
//! Everyday messages are a few hundred bytes and arrive in one read: they
//! reserve nothing, and the watch costs a few comparisons per read.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parley_actors::budget::{ByteBudget, Reservation};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::ws_frames::FrameTracker;

/// Messages up to this size reserve nothing: a client can hold no more than
/// this (plus one read) per socket outside the budget.
pub const SMALL_MESSAGE: u64 = 4 * 1024;

/// Why a connection's reads ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfinished {
    /// The client began a message and did not finish it in time.
    #[error("a WebSocket message was left unfinished past the time limit")]
    Stalled,
    /// A large message waited the whole time limit for room in the budget.
    #[error("no room to receive a large WebSocket message in time")]
    NoRoom,
}

impl Unfinished {
    /// The watch's verdict carried by `e`, if it is one.
    pub fn of(e: &io::Error) -> Option<Unfinished> {
        e.get_ref()?.downcast_ref::<Unfinished>().copied()
    }
}

/// The node's rules for unfinished messages, shared by every connection.
#[derive(Debug)]
pub struct MessageRules {
    /// Longest a message may take from its first byte to its last.
    pub timeout: Duration,
    /// Bytes of large unfinished messages, per user and for the node.
    pub budget: Arc<ByteBudget>,
    /// The most a message may state (larger ones the library refuses).
    pub max_message: u64,
}

/// A wait for room in the budget.
type RoomWait = Pin<Box<dyn Future<Output = Reservation> + Send>>;

/// A client socket whose unfinished messages are bounded; see the module docs.
pub struct MessageWatch<T> {
    inner: T,
    rules: Arc<MessageRules>,
    /// Whose share large messages count against.
    user: Arc<str>,
    frames: FrameTracker,
    /// Bytes reserved for the message in progress.
    held: Option<Reservation>,
    /// Set while waiting for room (nothing is read meanwhile).
    waiting: Option<RoomWait>,
    /// When the unfinished message in progress runs out of time.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The tracker's count of rests when the clock was last set.
    rests: u64,
}

impl<T> MessageWatch<T> {
    /// Watches `inner`, the socket of `user`'s session.
    pub fn new(inner: T, rules: Arc<MessageRules>, user: Arc<str>) -> Self {
        MessageWatch {
            inner,
            rules,
            user,
            frames: FrameTracker::default(),
            held: None,
            waiting: None,
            deadline: None,
            rests: 0,
        }
    }

    /// After new bytes: starts or stops the clock, and reserves what the
    /// message in progress now states (or gives back what it no longer needs).
    fn settle(&mut self) {
        // What is unfinished now began after the last rest: a client whose
        // every read ends partway into its next message still gets the
        // whole time for each message.
        let began = self.frames.rests() != self.rests;
        self.rests = self.frames.rests();
        let timeout = self.rules.timeout;
        match (self.frames.unfinished(), self.deadline.as_mut()) {
            (true, None) => self.deadline = Some(Box::pin(tokio::time::sleep(timeout))),
            (true, Some(d)) if began => d.as_mut().reset(tokio::time::Instant::now() + timeout),
            (false, Some(_)) => self.deadline = None,
            _ => {}
        }
        let stated = self.frames.message_bytes().min(self.rules.max_message);
        let want = if stated > SMALL_MESSAGE { stated } else { 0 };
        let held = self.held.as_ref().map_or(0, Reservation::bytes);
        if want == 0 {
            self.held = None;
        } else if want < held {
            if let Some(r) = self.held.as_mut() {
                r.settle(want);
            }
        } else if want > held {
            self.reserve(want - held);
        }
    }

    /// Reserves `more` bytes at once, or starts waiting for room.
    fn reserve(&mut self, more: u64) {
        let taken = match self.held.as_mut() {
            Some(r) => r.try_grow(more).is_ok(),
            None => match self.rules.budget.try_reserve(&self.user, more) {
                Ok(r) => {
                    self.held = Some(r);
                    true
                }
                Err(_) => false,
            },
        };
        if !taken {
            self.waiting = Some(match self.held.as_ref() {
                // Judged with what the message already holds: a message
                // alone gets through in fragments as it would whole.
                Some(r) => Box::pin(r.grow_later(more)),
                None => {
                    let (budget, user) = (self.rules.budget.clone(), self.user.clone());
                    Box::pin(async move { budget.reserve(&user, more).await })
                }
            });
        }
    }

    /// Takes a reservation that was waited for.
    fn take(&mut self, r: Reservation) {
        match self.held.as_mut() {
            Some(held) => held.absorb(r),
            None => self.held = Some(r),
        }
    }

    /// Nothing to read yet: pending, unless the message in progress has
    /// run out of time (then the reason, as an error).
    fn pending(&mut self, cx: &mut Context<'_>, why: Unfinished) -> Poll<io::Result<()>> {
        let out_of_time = self
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if out_of_time {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
        } else {
            Poll::Pending
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for MessageWatch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(wait) = this.waiting.as_mut() {
            match wait.as_mut().poll(cx) {
                Poll::Ready(r) => {
                    this.waiting = None;
                    this.take(r);
                }
                Poll::Pending => return this.pending(cx, Unfinished::NoRoom),
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.frames.feed(read);
                    this.settle();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => this.pending(cx, Unfinished::Stalled),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for MessageWatch<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// The header of a masked text frame with FIN and `len` payload bytes (len > 0xffff).
    fn long_header(len: u64) -> Vec<u8> {
        let mut h = vec![0x81, 0x80 | 127];
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    fn watched(
        budget: &Arc<ByteBudget>,
        user: &str,
        timeout: Duration,
    ) -> (MessageWatch<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(1 << 20);
        let rules = Arc::new(MessageRules {
            timeout,
            budget: budget.clone(),
            max_message: 1 << 20,
        });
        (MessageWatch::new(server, rules, Arc::from(user)), client)
    }

    #[tokio::test]
    async fn a_large_message_holds_its_stated_size_until_its_last_byte() {
        let budget = ByteBudget::new(0, 0);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(60));
        client.write_all(&long_header(70_000)).await.unwrap();
        client.write_all(&[b'x'; 1_000]).await.unwrap();
        let mut buf = vec![0u8; 100_000];
        let mut got = watch.read(&mut buf).await.unwrap();
        assert_eq!(budget.held(), 70_000);
        client.write_all(&vec![b'x'; 69_000]).await.unwrap();
        while got < 14 + 70_000 {
            got += watch.read(&mut buf).await.unwrap();
        }
        assert_eq!(budget.held(), 0, "given back with the last byte");
    }

    #[tokio::test]
    async fn small_messages_reserve_nothing() {
        let budget = ByteBudget::new(0, 0);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(60));
        client
            .write_all(&[0x81, 0x80 | 126, 0x10, 0x00])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        watch.read_exact(&mut buf[..4]).await.unwrap();
        assert_eq!(budget.held(), 0, "4,096 bytes is small");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfinished_message_ends_the_connection_after_the_time_limit() {
        let budget = ByteBudget::new(0, 0);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(20));
        client
            .write_all(&[0x81, 0x85, 1, 2, 3, 4, b'a'])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        watch.read_exact(&mut buf[..7]).await.unwrap();
        let started = tokio::time::Instant::now();
        let e = watch.read(&mut buf).await.unwrap_err();
        assert_eq!(Unfinished::of(&e), Some(Unfinished::Stalled));
        assert_eq!(started.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_limit_starts_again_with_each_message() {
        let budget = ByteBudget::new(0, 0);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(20));
        let message = [0x81, 0x85, 1, 2, 3, 4, b'a', b'b', b'c', b'd', b'e'];
        let mut buf = [0u8; 64];
        client.write_all(&message[..8]).await.unwrap();
        watch.read_exact(&mut buf[..8]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(15)).await;
        // The end of the first message and the start of the next, in one read.
        let mut straddle = message[8..].to_vec();
        straddle.extend_from_slice(&message[..8]);
        client.write_all(&straddle).await.unwrap();
        watch.read_exact(&mut buf[..straddle.len()]).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(19), watch.read(&mut buf)).await;
        assert!(
            waited.is_err(),
            "34 s after the first message began, 19 s after the second did: still open ({waited:?})"
        );
        client.write_all(&message[8..]).await.unwrap();
        watch.read_exact(&mut buf[..3]).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_between_messages_has_no_time_limit() {
        let budget = ByteBudget::new(0, 0);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(20));
        client
            .write_all(&[0x81, 0x81, 1, 2, 3, 4, b'a'])
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        watch.read_exact(&mut buf[..7]).await.unwrap();
        let idle = tokio::time::timeout(Duration::from_secs(3600), watch.read(&mut buf)).await;
        assert!(
            idle.is_err(),
            "still waiting for the next message an hour on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn over_the_budget_nothing_is_read_until_room_is_made() {
        let budget = ByteBudget::new(100_000, 0);
        let (mut first, mut first_client) = watched(&budget, "alice", Duration::from_secs(20));
        let (mut second, mut second_client) = watched(&budget, "bob", Duration::from_secs(20));
        let mut buf = vec![0u8; 100_000];
        first_client.write_all(&long_header(70_000)).await.unwrap();
        first.read_exact(&mut buf[..14]).await.unwrap();
        second_client.write_all(&long_header(70_000)).await.unwrap();
        second.read_exact(&mut buf[..14]).await.unwrap();
        assert_eq!(budget.held(), 70_000, "the second waits for room");
        second_client.write_all(b"more").await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_secs(5), second.read(&mut buf)).await;
        assert!(waiting.is_err(), "nothing read while there is no room");
        first_client.write_all(&vec![b'x'; 70_000]).await.unwrap();
        let mut got = 0;
        while got < 70_000 {
            got += first.read(&mut buf).await.unwrap();
        }
        assert_eq!(
            second.read(&mut buf).await.unwrap(),
            4,
            "read once room is made"
        );
        assert_eq!(budget.held(), 70_000);
    }

    /// A masked frame of `len` payload bytes with a 16-bit length.
    fn medium_frame(first_byte: u8, len: u16) -> Vec<u8> {
        let mut f = vec![first_byte, 0x80 | 126];
        f.extend_from_slice(&len.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(b'x', usize::from(len)));
        f
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_alone_goes_through_in_fragments_as_it_would_whole() {
        // A share smaller than the message: one reservation alone goes.
        let budget = ByteBudget::new(0, 32 * 1024);
        let (mut watch, mut client) = watched(&budget, "alice", Duration::from_secs(20));
        let first = medium_frame(0x01, 20_000); // text, not final
        let last = medium_frame(0x80, 20_000); // continuation, final
        let mut buf = vec![0u8; 50_000];
        client.write_all(&first).await.unwrap();
        watch.read_exact(&mut buf[..first.len()]).await.unwrap();
        assert_eq!(budget.held(), 20_000);
        // Its header first, read alone: the message now states 40,000.
        client.write_all(&last[..8]).await.unwrap();
        watch.read_exact(&mut buf[..8]).await.unwrap();
        client.write_all(&last[8..]).await.unwrap();
        watch
            .read_exact(&mut buf[..last.len() - 8])
            .await
            .expect("the second fragment is read, not left waiting on the first");
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn no_room_within_the_time_limit_ends_the_connection() {
        let budget = ByteBudget::new(100_000, 0);
        let (mut first, mut first_client) = watched(&budget, "alice", Duration::from_secs(20));
        let (mut second, mut second_client) = watched(&budget, "bob", Duration::from_secs(20));
        let mut buf = vec![0u8; 100_000];
        first_client.write_all(&long_header(70_000)).await.unwrap();
        first.read_exact(&mut buf[..14]).await.unwrap();
        second_client.write_all(&long_header(70_000)).await.unwrap();
        second.read_exact(&mut buf[..14]).await.unwrap();
        let e = second.read(&mut buf).await.unwrap_err();
        assert_eq!(Unfinished::of(&e), Some(Unfinished::NoRoom));
        drop(second);
        assert_eq!(budget.held(), 70_000, "the waiter took nothing with it");
    }
}
