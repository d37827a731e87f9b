//! A bound on the bytes a node holds for clients that have not read them.
//!
//! A history page or a `sync` page can be megabytes (200 messages of 4,000
//! characters). Once built, it stays in the node's memory until the client's
//! socket takes it, and a client that never reads (or reads a trickle now and
//! then, which no write timeout catches) keeps it there. Without a bound, a
//! few accounts asking for large pages on many connections could make a node
//! hold gigabytes.
//!
//! So every such answer reserves its bytes here before it is handed over,
//! under a limit per user and one per node ([`UnsentBudget`]); the
//! [`Reservation`] gives them back when it is dropped, once the answer has
//! reached the connection or the connection is gone. An HTTP answer over
//! the budget is refused (the user's own limit: 429; the node's: 503) and a
//! `sync` page waits for room without holding its messages.
//!
//! One answer is always allowed when its user (or the node) holds nothing,
//! however large, so a limit set below a page never stops a client for good.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Which limit an answer would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    /// The user holds as much unread as one user may.
    #[error("too much unread: read earlier answers first")]
    User,
    /// The node holds as much unread as it may.
    #[error("the node is holding too many unread answers, try again")]
    Node,
}

/// The bytes of answers reserved and not yet handed to their connections.
#[derive(Debug)]
pub struct UnsentBudget {
    node_max: u64,
    user_max: u64,
    held: Mutex<Held>,
    released: Notify,
}

#[derive(Debug, Default)]
struct Held {
    node: u64,
    users: HashMap<Arc<str>, u64>,
}

/// Bytes held for one user's answer; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<UnsentBudget>,
    user: Arc<str>,
    bytes: u64,
}

impl UnsentBudget {
    /// A budget of `node_max` bytes per node and `user_max` per user (0: no limit).
    pub fn new(node_max: u64, user_max: u64) -> Arc<Self> {
        Arc::new(UnsentBudget {
            node_max,
            user_max,
            held: Mutex::new(Held::default()),
            released: Notify::new(),
        })
    }

    /// Reserves `bytes` for `user`'s answer, or says which limit it breaks.
    pub fn try_reserve(
        self: &Arc<Self>,
        user: &Arc<str>,
        bytes: u64,
    ) -> Result<Reservation, OverBudget> {
        self.take(&mut self.lock(), user, bytes)?;
        Ok(Reservation {
            budget: self.clone(),
            user: user.clone(),
            bytes,
        })
    }

    /// Counts `bytes` more for `user` in `held`, or says which limit that breaks.
    fn take(&self, held: &mut Held, user: &Arc<str>, bytes: u64) -> Result<(), OverBudget> {
        let by_user = held.users.get(user).copied().unwrap_or(0);
        if over(self.user_max, by_user, bytes) {
            return Err(OverBudget::User);
        }
        if over(self.node_max, held.node, bytes) {
            return Err(OverBudget::Node);
        }
        held.node += bytes;
        *held.users.entry(user.clone()).or_insert(0) += bytes;
        Ok(())
    }

    /// Reserves `bytes` for `user`'s answer, waiting until earlier answers
    /// have made room.
    pub async fn reserve(self: &Arc<Self>, user: &Arc<str>, bytes: u64) -> Reservation {
        loop {
            // Registered before trying, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Ok(r) = self.try_reserve(user, bytes) {
                return r;
            }
            released.await;
        }
    }

    /// Counts `bytes` of `user` out (forgetting a user left with none) and
    /// wakes those waiting for room.
    fn give_back(&self, user: &Arc<str>, bytes: u64) {
        {
            let mut held = self.lock();
            held.node = held.node.saturating_sub(bytes);
            if let Some(by_user) = held.users.get_mut(user) {
                *by_user = by_user.saturating_sub(bytes);
                if *by_user == 0 {
                    held.users.remove(user);
                }
            }
        }
        self.released.notify_waiters();
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
/// held never does: one answer always goes, however large.
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
            .take(&mut self.budget.lock(), &self.user, more)?;
        self.bytes += more;
        Ok(())
    }

    /// Settles an estimate reserved up front to the `bytes` the answer
    /// turned out to take (at most the estimate: it is not checked).
    pub fn settle(&mut self, bytes: u64) {
        let less = self.bytes.saturating_sub(bytes);
        if less > 0 {
            self.budget.give_back(&self.user, less);
            self.bytes -= less;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(&self.user, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn holds_each_user_and_the_node_to_their_limits() {
        let budget = UnsentBudget::new(250, 100);
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let a1 = budget.try_reserve(&alice, 60).unwrap();
        assert_eq!(
            budget.try_reserve(&alice, 60).unwrap_err(),
            OverBudget::User
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
            budget.lock().users.is_empty(),
            "users holding nothing are forgotten"
        );
    }

    #[test]
    fn one_answer_goes_whatever_its_size_when_nothing_is_held() {
        let budget = UnsentBudget::new(100, 10);
        let alice = user("alice");
        let big = budget.try_reserve(&alice, 1_000).unwrap();
        assert_eq!(budget.try_reserve(&alice, 1).unwrap_err(), OverBudget::User);
        assert_eq!(
            budget.try_reserve(&user("bob"), 1).unwrap_err(),
            OverBudget::Node
        );
        drop(big);
        budget.try_reserve(&user("bob"), 1_000).unwrap();
    }

    #[test]
    fn zero_means_no_limit() {
        let budget = UnsentBudget::new(0, 0);
        let alice = user("alice");
        let held: Vec<_> = (0..10)
            .map(|_| budget.try_reserve(&alice, u64::MAX / 20).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn a_reservation_grows_within_the_limits_and_settles_to_what_was_used() {
        let budget = UnsentBudget::new(0, 100);
        let alice = user("alice");
        let mut r = budget.try_reserve(&alice, 10).unwrap();
        r.try_grow(60).unwrap();
        assert_eq!(r.try_grow(31).unwrap_err(), OverBudget::User);
        assert_eq!(budget.held(), 70);
        r.settle(25);
        assert_eq!((r.bytes(), budget.held()), (25, 25));
        budget.try_reserve(&alice, 75).unwrap();
        drop(r);
        assert_eq!(budget.held(), 0);
    }

    #[tokio::test]
    async fn a_waiting_reservation_goes_when_room_is_made() {
        let budget = UnsentBudget::new(0, 100);
        let alice = user("alice");
        let first = budget.try_reserve(&alice, 80).unwrap();
        let waiter = {
            let (budget, alice) = (budget.clone(), alice.clone());
            tokio::spawn(async move { budget.reserve(&alice, 50).await.bytes() })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "it waits while the user holds 80 of 100"
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
