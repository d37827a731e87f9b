//! A bound on bytes a node holds on behalf of others, per holder and per node.
//!
//! Two kinds of bytes sit in a node's memory for as long as someone else
//! decides: answers built for clients that have not read them yet (a
//! history page or a `sync` page can be megabytes, and a client that never
//! reads keeps it there), and request bodies still arriving (a client can
//! send most of a body and stall). Without a bound, a few clients doing
//! either on many connections could make a node hold gigabytes.
//!
//! So such bytes are reserved here first, under a share per holder (a user,
//! a client address) and a limit for the whole node ([`ByteBudget`]); the
//! [`Reservation`] gives them back when it is dropped. What a caller does
//! over the limits is its own choice: refuse, or wait for room.
//!
//! One reservation is always allowed when its holder (or the node) holds
//! nothing, however large, so a limit set below one answer never stops a
//! client for good.
//!
//! Reservations that wait for room queue here, oldest first; bytes given
//! back go to the waiters they make room for, and only those are woken.
//! (Waking every waiter on every release made each release cost a task
//! wake-up per waiter: thousands of sockets waiting for room turned every
//! finished message into milliseconds of CPU.)

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Which limit a reservation would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The holder has as much reserved as one holder may.
    #[error("over the holder's share")]
    Share,
    /// The node has as much reserved as it may.
    #[error("over the node's limit")]
    Node,
}

/// Bytes reserved and not yet given back, per holder and for the node.
#[derive(Debug)]
pub struct ByteBudget {
    node_max: u64,
    share_max: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    node: u64,
    holders: HashMap<Arc<str>, u64>,
    /// Reservations waiting for room, oldest first.
    waiting: VecDeque<Waiter>,
    /// The id the next waiter gets.
    next_waiter: u64,
}

/// A reservation waiting for room.
#[derive(Debug)]
struct Waiter {
    id: u64,
    holder: Arc<str>,
    bytes: u64,
    /// The bytes of the reservation these would grow (see [`ByteBudget::take`]).
    own: u64,
    /// Told once the bytes are counted for it.
    granted: oneshot::Sender<()>,
}

/// A place in the queue of waiters; leaves it (or gives back what it was
/// granted and never took up) when dropped.
struct Queued {
    budget: Arc<ByteBudget>,
    id: u64,
    holder: Arc<str>,
    bytes: u64,
    granted: oneshot::Receiver<()>,
    /// The grant was taken up as a [`Reservation`].
    taken: bool,
}

/// Bytes held for one holder; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    holder: Arc<str>,
    bytes: u64,
}

impl ByteBudget {
    /// A budget of `node_max` bytes per node and `share_max` per holder (0: no limit).
    pub fn new(node_max: u64, share_max: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            node_max,
            share_max,
            held: Mutex::new(Held::default()),
        })
    }

    /// Reserves `bytes` for `holder`, or says which limit that breaks.
    pub fn try_reserve(
        self: &Arc<Self>,
        holder: &Arc<str>,
        bytes: u64,
    ) -> Result<Reservation, OverBudget> {
        self.take(&mut self.lock(), holder, bytes, 0)?;
        Ok(Reservation {
            budget: self.clone(),
            holder: holder.clone(),
            bytes,
        })
    }

    /// Counts `bytes` more for `holder` in `held`, or says which limit that
    /// breaks. `own` of what the holder (and the node) holds is the
    /// reservation these bytes would grow, judged with them as one: it goes
    /// whatever its size if nothing else is held.
    fn take(
        &self,
        held: &mut Held,
        holder: &Arc<str>,
        bytes: u64,
        own: u64,
    ) -> Result<(), OverBudget> {
        let by_holder = held.holders.get(holder).copied().unwrap_or(0);
        let whole = own.saturating_add(bytes);
        if over(self.share_max, by_holder.saturating_sub(own), whole) {
            return Err(OverBudget::Share);
        }
        if over(self.node_max, held.node.saturating_sub(own), whole) {
            return Err(OverBudget::Node);
        }
        held.node += bytes;
        *held.holders.entry(holder.clone()).or_insert(0) += bytes;
        Ok(())
    }

    /// Reserves `bytes` for `holder`, waiting until earlier reservations
    /// have made room.
    pub async fn reserve(self: &Arc<Self>, holder: &Arc<str>, bytes: u64) -> Reservation {
        self.reserve_beside(holder, bytes, 0).await
    }

    /// [`ByteBudget::reserve`], judged together with a reservation of `own`
    /// bytes of the same holder that these would grow.
    async fn reserve_beside(
        self: &Arc<Self>,
        holder: &Arc<str>,
        bytes: u64,
        own: u64,
    ) -> Reservation {
        loop {
            let mut queued = match self.reserve_or_queue(holder, bytes, own) {
                Ok(r) => return r,
                Err(q) => q,
            };
            // The sender stays queued until it grants or this wait ends, so
            // the channel only closes unanswered if something went badly
            // wrong: then queue again.
            if (&mut queued.granted).await.is_ok() {
                queued.taken = true;
                return Reservation {
                    budget: self.clone(),
                    holder: holder.clone(),
                    bytes,
                };
            }
        }
    }

    /// Reserves at once, or queues a waiter (checked under one lock, so a
    /// release in between is not missed).
    fn reserve_or_queue(
        self: &Arc<Self>,
        holder: &Arc<str>,
        bytes: u64,
        own: u64,
    ) -> Result<Reservation, Queued> {
        let mut held = self.lock();
        if self.take(&mut held, holder, bytes, own).is_ok() {
            return Ok(Reservation {
                budget: self.clone(),
                holder: holder.clone(),
                bytes,
            });
        }
        let (tx, rx) = oneshot::channel();
        let id = held.next_waiter;
        held.next_waiter += 1;
        held.waiting.push_back(Waiter {
            id,
            holder: holder.clone(),
            bytes,
            own,
            granted: tx,
        });
        Err(Queued {
            budget: self.clone(),
            id,
            holder: holder.clone(),
            bytes,
            granted: rx,
            taken: false,
        })
    }

    /// Counts `bytes` of `holder` out (forgetting a holder left with none)
    /// and hands the room to the waiters it makes room for.
    fn give_back(&self, holder: &Arc<str>, bytes: u64) {
        let mut held = self.lock();
        Self::count_out(&mut held, holder, bytes);
        self.grant_waiting(&mut held);
    }

    /// Counts `bytes` of `holder` out of `held`.
    fn count_out(held: &mut Held, holder: &Arc<str>, bytes: u64) {
        held.node = held.node.saturating_sub(bytes);
        if let Some(by_holder) = held.holders.get_mut(holder) {
            *by_holder = by_holder.saturating_sub(bytes);
            if *by_holder == 0 {
                held.holders.remove(holder);
            }
        }
    }

    /// Grants every waiter that now fits, oldest first, and wakes only those.
    fn grant_waiting(&self, held: &mut Held) {
        let mut i = 0;
        while i < held.waiting.len() {
            let (holder, bytes, own) = {
                let w = &held.waiting[i];
                (w.holder.clone(), w.bytes, w.own)
            };
            if self.take(held, &holder, bytes, own).is_err() {
                i += 1;
                continue;
            }
            if let Some(w) = held.waiting.remove(i) {
                if w.granted.send(()).is_err() {
                    // Its wait is gone (it leaves the queue under this lock
                    // first, so this does not happen; undone all the same).
                    Self::count_out(held, &holder, bytes);
                }
            }
        }
    }

    /// Bytes reserved on this node now.
    pub fn held(&self) -> u64 {
        self.lock().node
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counts stay consistent whatever panicked while holding the lock
        // (every change is a single add or subtract), so a poisoned lock is used as is.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `bytes` more on top of `held` break `max` (0: no limit). Nothing
/// held never does: one reservation always goes, however large.
fn over(max: u64, held: u64, bytes: u64) -> bool {
    max > 0 && held > 0 && held.saturating_add(bytes) > max
}

impl Reservation {
    /// The bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reserves `more` bytes on top, or says which limit that breaks.
    pub fn try_grow(&mut self, more: u64) -> Result<(), OverBudget> {
        self.budget
            .take(&mut self.budget.lock(), &self.holder, more, 0)?;
        self.bytes += more;
        Ok(())
    }

    /// Waits until `more` bytes fit beside this reservation, judged with
    /// it as one (so a reservation alone goes whatever it grows to, as it
    /// would have had it been made whole at once); the bytes come as a
    /// reservation of their own, for [`Reservation::absorb`].
    pub fn grow_later(
        &self,
        more: u64,
    ) -> impl std::future::Future<Output = Reservation> + Send + 'static {
        let (budget, holder, own) = (self.budget.clone(), self.holder.clone(), self.bytes);
        async move { budget.reserve_beside(&holder, more, own).await }
    }

    /// Takes over `other`'s bytes (reserved in the same budget for the
    /// same holder): one reservation that gives both back when dropped.
    pub fn absorb(&mut self, mut other: Reservation) {
        debug_assert!(Arc::ptr_eq(&self.budget, &other.budget) && self.holder == other.holder);
        self.bytes += std::mem::take(&mut other.bytes);
    }

    /// Settles an estimate reserved up front to the `bytes` it turned out
    /// to take (at most the estimate: it is not checked).
    pub fn settle(&mut self, bytes: u64) {
        let less = self.bytes.saturating_sub(bytes);
        if less > 0 {
            self.budget.give_back(&self.holder, less);
            self.bytes -= less;
        }
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut held = self.budget.lock();
        if let Some(i) = held.waiting.iter().position(|w| w.id == self.id) {
            held.waiting.remove(i);
            return;
        }
        // Granted (under the lock, before this) but never taken up.
        if self.granted.try_recv().is_ok() {
            ByteBudget::count_out(&mut held, &self.holder, self.bytes);
            self.budget.grant_waiting(&mut held);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(&self.holder, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn holder(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn holds_each_holder_and_the_node_to_their_limits() {
        let budget = ByteBudget::new(250, 100);
        let (alice, bob, carol) = (holder("alice"), holder("bob"), holder("carol"));
        let a1 = budget.try_reserve(&alice, 60).unwrap();
        assert_eq!(
            budget.try_reserve(&alice, 60).unwrap_err(),
            OverBudget::Share
        );
        let a2 = budget.try_reserve(&alice, 40).unwrap();
        let b1 = budget.try_reserve(&bob, 100).unwrap();
        let c1 = budget.try_reserve(&carol, 50).unwrap();
        assert_eq!(budget.held(), 250);
        assert_eq!(budget.try_reserve(&carol, 1).unwrap_err(), OverBudget::Node);
        drop(a1);
        assert_eq!(budget.held(), 190);
        let c2 = budget.try_reserve(&carol, 50).unwrap();
        drop((a2, b1, c1, c2));
        assert_eq!(budget.held(), 0);
        assert!(
            budget.lock().holders.is_empty(),
            "holders holding nothing are forgotten"
        );
    }

    #[test]
    fn one_reservation_goes_whatever_its_size_when_nothing_is_held() {
        let budget = ByteBudget::new(100, 10);
        let alice = holder("alice");
        let big = budget.try_reserve(&alice, 1_000).unwrap();
        assert_eq!(
            budget.try_reserve(&alice, 1).unwrap_err(),
            OverBudget::Share
        );
        assert_eq!(
            budget.try_reserve(&holder("bob"), 1).unwrap_err(),
            OverBudget::Node
        );
        drop(big);
        budget.try_reserve(&holder("bob"), 1_000).unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let budget = ByteBudget::new(0, 0);
        let alice = holder("alice");
        let held: Vec<_> = (0..10)
            .map(|_| budget.try_reserve(&alice, u64::MAX / 20).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn a_reservation_grows_within_the_limits_and_settles_to_what_was_used() {
        let budget = ByteBudget::new(0, 100);
        let alice = holder("alice");
        let mut r = budget.try_reserve(&alice, 10).unwrap();
        r.try_grow(60).unwrap();
        assert_eq!(r.try_grow(31).unwrap_err(), OverBudget::Share);
        assert_eq!(budget.held(), 70);
        r.settle(25);
        assert_eq!((r.bytes(), budget.held()), (25, 25));
        budget.try_reserve(&alice, 75).unwrap();
        drop(r);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_absorbed_reservation_is_given_back_with_the_one_that_took_it() {
        let budget = ByteBudget::new(0, 100);
        let alice = holder("alice");
        let mut r = budget.try_reserve(&alice, 30).unwrap();
        r.absorb(budget.try_reserve(&alice, 50).unwrap());
        assert_eq!((r.bytes(), budget.held()), (80, 80));
        drop(r);
        assert_eq!(budget.held(), 0);
    }

    /// Counts the times it is woken.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_release_wakes_only_the_waiters_it_makes_room_for() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};
        let budget = ByteBudget::new(100, 0);
        let first = budget.try_reserve(&holder("alice"), 100).unwrap();
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let big: Vec<_> = (0..100)
            .map(|i| {
                let (budget, who) = (budget.clone(), holder(&format!("big{i}")));
                let mut wait = Box::pin(async move { budget.reserve(&who, 60).await });
                assert!(wait.as_mut().poll(&mut cx).is_pending());
                wait
            })
            .collect();
        let (b, who) = (budget.clone(), holder("small"));
        let mut small = Box::pin(async move { b.reserve(&who, 10).await });
        assert!(small.as_mut().poll(&mut cx).is_pending());
        let mut first = first;
        first.settle(50);
        assert_eq!(
            wakes.0.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "50 bytes free: room for the small waiter, none of the big ones"
        );
        let Poll::Ready(r) = small.as_mut().poll(&mut cx) else {
            panic!("the small waiter was granted");
        };
        assert_eq!((r.bytes(), budget.held()), (10, 60));
        drop(big);
        assert!(
            budget.lock().waiting.is_empty(),
            "dropped waits leave the queue"
        );
    }

    #[test]
    fn a_grant_never_taken_up_is_given_back() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let budget = ByteBudget::new(100, 0);
        let first = budget.try_reserve(&holder("alice"), 100).unwrap();
        let waker = Waker::from(Arc::new(Wakes(Default::default())));
        let mut cx = Context::from_waker(&waker);
        let (b, bob) = (budget.clone(), holder("bob"));
        let mut wait = Box::pin(async move { b.reserve(&bob, 70).await });
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(first);
        assert_eq!(budget.held(), 70, "granted to the waiter");
        drop(wait);
        assert_eq!(
            budget.held(),
            0,
            "given back by the wait that never took it"
        );
    }

    #[tokio::test]
    async fn growing_later_counts_the_reservation_it_grows_as_its_own() {
        let budget = ByteBudget::new(0, 100);
        let alice = holder("alice");
        let mut r = budget.try_reserve(&alice, 60).unwrap();
        assert_eq!(r.try_grow(60).unwrap_err(), OverBudget::Share);
        let more = tokio::time::timeout(Duration::from_secs(5), r.grow_later(60))
            .await
            .expect("alone, it grows past the share at once");
        r.absorb(more);
        assert_eq!((r.bytes(), budget.held()), (120, 120));
        drop(r);
        // Beside another of Alice's, it waits for room.
        let mut a = budget.try_reserve(&alice, 50).unwrap();
        let b = budget.try_reserve(&alice, 40).unwrap();
        let later = a.grow_later(20);
        tokio::pin!(later);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), later.as_mut())
                .await
                .is_err(),
            "50 + 20 beside 40 is over 100"
        );
        drop(b);
        a.absorb(later.await);
        assert_eq!(a.bytes(), 70);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_waiting_reservation_goes_when_room_is_made() {
        let budget = ByteBudget::new(0, 100);
        let alice = holder("alice");
        let first = budget.try_reserve(&alice, 80).unwrap();
        let waiter = {
            let (budget, alice) = (budget.clone(), alice.clone());
            tokio::spawn(async move { budget.reserve(&alice, 50).await.bytes() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "it waits while the holder has 80 of 100"
        );
        drop(first);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, 50);
        assert_eq!(budget.held(), 0);
    }
}
