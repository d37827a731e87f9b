//! Presence changes waiting to be announced.
//!
//! Announcing a change needs storage reads (the user's rooms and their
//! members), so in a connect storm changes arrive faster than one announcer
//! can send them. The queue never drops a change: it keeps at most one per
//! user, the latest, because that is all the user's contacts need to know
//! (an `online` then `offline` still waiting is announced as `offline`).
//! A change for this node's sessions only, merged with one for everyone,
//! goes to everyone.
//! Users are announced in the order they first changed, several at a time,
//! but never two changes of one user at once, so a user's contacts cannot
//! see an older status arrive after a newer one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use parley_protocol::ws::Status;
use tokio::sync::Notify;

/// Whose sessions hear of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Audience {
    /// The user's contacts connected to this node.
    ThisNode,
    /// The user's contacts wherever they are connected.
    Everyone,
}

/// One presence change of one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The user's new status.
    pub status: Status,
    /// When it changed, milliseconds since the epoch.
    pub at: i64,
    /// Who hears of it.
    pub audience: Audience,
}

/// What the queue holds, behind its lock.
#[derive(Default)]
struct Pending {
    /// Users with a change waiting, in the order they first changed.
    order: VecDeque<Arc<str>>,
    /// The latest waiting change of each user in `order`.
    latest: HashMap<Arc<str>, Change>,
    /// Users whose announcement is being sent now.
    in_flight: HashSet<Arc<str>>,
    /// No more changes will be pushed.
    closed: bool,
}

/// Presence changes waiting to be announced: at most one per user.
#[derive(Default)]
pub struct PresenceQueue {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// What [`PresenceQueue::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// A change to announce now; hand the user back with
    /// [`PresenceQueue::done`] once it is sent.
    Change(Arc<str>, Change),
    /// Nothing can be announced now (empty, or only users already in flight).
    Wait,
    /// The queue is closed and empty: the announcer can stop.
    Finished,
}

impl PresenceQueue {
    /// An empty queue.
    pub fn new() -> Arc<Self> {
        Arc::new(PresenceQueue::default())
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `change` for `user`, replacing one still waiting (whose
    /// audience it keeps if that was the wider one).
    pub fn push(&self, user: Arc<str>, mut change: Change) {
        let mut pending = self.lock();
        match pending.latest.get_mut(&user) {
            Some(waiting) => {
                change.audience = change.audience.max(waiting.audience);
                *waiting = change;
            }
            None => {
                pending.latest.insert(user.clone(), change);
                pending.order.push_back(user);
            }
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// The oldest waiting change whose user has none in flight; marks the
    /// user in flight.
    pub fn take(&self) -> Taken {
        let mut pending = self.lock();
        let pending = &mut *pending;
        // Users in flight are skipped; each user is in `order` at most once,
        // so this passes over at most as many entries as are in flight.
        let found = pending
            .order
            .iter()
            .position(|user| !pending.in_flight.contains(user));
        let Some(index) = found else {
            return if pending.closed && pending.order.is_empty() && pending.in_flight.is_empty() {
                Taken::Finished
            } else {
                Taken::Wait
            };
        };
        let Some(user) = pending.order.remove(index) else {
            return Taken::Wait;
        };
        let Some(change) = pending.latest.remove(&user) else {
            return Taken::Wait;
        };
        pending.in_flight.insert(user.clone());
        Taken::Change(user, change)
    }

    /// `user`'s announcement is sent; a change of theirs that came in
    /// meanwhile can go next.
    pub fn done(&self, user: &str) {
        self.lock().in_flight.remove(user);
        self.wake.notify_one();
    }

    /// No more changes will come; [`take`](Self::take) says `Finished` once
    /// the waiting ones are sent.
    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }

    /// Waits until something was pushed, done or closed since the last wait.
    pub async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Users with a change waiting (not counting those in flight).
    pub fn waiting(&self) -> usize {
        self.lock().order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(status: Status, at: i64) -> Change {
        Change {
            status,
            at,
            audience: Audience::Everyone,
        }
    }

    fn user(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn the_latest_change_of_a_user_replaces_the_waiting_one_in_its_place() {
        let q = PresenceQueue::new();
        q.push(user("a"), change(Status::Online, 1));
        q.push(user("b"), change(Status::Online, 2));
        q.push(user("a"), change(Status::Offline, 3));
        assert_eq!(q.waiting(), 2);
        assert_eq!(
            q.take(),
            Taken::Change(user("a"), change(Status::Offline, 3))
        );
        assert_eq!(
            q.take(),
            Taken::Change(user("b"), change(Status::Online, 2))
        );
        assert_eq!(q.take(), Taken::Wait);
    }

    #[test]
    fn a_change_for_everyone_is_not_narrowed_by_a_later_local_one() {
        let q = PresenceQueue::new();
        let here = |status, at| Change {
            status,
            at,
            audience: Audience::ThisNode,
        };
        q.push(user("a"), change(Status::Offline, 1));
        q.push(user("a"), here(Status::Online, 2));
        assert_eq!(
            q.take(),
            Taken::Change(user("a"), change(Status::Online, 2)),
            "the waiting offline was for everyone: what replaces it goes to everyone too"
        );
        q.done("a");
        q.push(user("b"), here(Status::Online, 3));
        assert_eq!(q.take(), Taken::Change(user("b"), here(Status::Online, 3)));
    }

    #[test]
    fn a_user_in_flight_waits_while_others_go_ahead() {
        let q = PresenceQueue::new();
        q.push(user("a"), change(Status::Online, 1));
        let Taken::Change(a, _) = q.take() else {
            panic!("a first");
        };
        // A newer change of `a` arrives while its first is being sent.
        q.push(user("a"), change(Status::Offline, 2));
        q.push(user("b"), change(Status::Online, 3));
        assert_eq!(
            q.take(),
            Taken::Change(user("b"), change(Status::Online, 3))
        );
        assert_eq!(q.take(), Taken::Wait, "a is still in flight");
        q.done(&a);
        assert_eq!(
            q.take(),
            Taken::Change(user("a"), change(Status::Offline, 2))
        );
    }

    #[test]
    fn nothing_is_dropped_however_many_users_wait() {
        let q = PresenceQueue::new();
        for i in 0..50_000 {
            q.push(
                Arc::from(format!("u{i}").as_str()),
                change(Status::Online, i),
            );
        }
        let mut seen = 0;
        while let Taken::Change(u, c) = q.take() {
            assert_eq!(&*u, format!("u{}", c.at));
            q.done(&u);
            seen += 1;
        }
        assert_eq!(seen, 50_000);
    }

    #[test]
    fn a_closed_queue_finishes_after_its_waiting_and_in_flight_changes() {
        let q = PresenceQueue::new();
        q.push(user("a"), change(Status::Online, 1));
        q.close();
        let Taken::Change(a, _) = q.take() else {
            panic!("the waiting change still goes out");
        };
        assert_eq!(q.take(), Taken::Wait, "a is in flight");
        q.done(&a);
        assert_eq!(q.take(), Taken::Finished);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_announcer() {
        let q = PresenceQueue::new();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move {
                loop {
                    if let Taken::Change(u, _) = q.take() {
                        return u;
                    }
                    q.changed().await;
                }
            })
        };
        tokio::task::yield_now().await;
        q.push(user("a"), change(Status::Online, 1));
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(&*got, "a");
    }
}
