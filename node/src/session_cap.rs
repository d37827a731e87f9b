//! How many WebSocket sessions one user may hold open on this node.
//!
//! Every session is an actor, a pair of tasks and a socket; a single account
//! that opens thousands of them (a leaked token in a reconnect loop, a script)
//! would eat the node's connection budget that everyone shares. The gateway
//! takes a [`SessionSlot`] before it upgrades and holds it for the session's
//! life; past the cap the upgrade is refused with 429 `rate_limited`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Open sessions per user on this node, with a cap (0 = no cap).
pub struct SessionCap {
    max_per_user: usize,
    open: Mutex<HashMap<Arc<str>, usize>>,
}

impl SessionCap {
    /// A cap of `max_per_user` sessions per user; 0 turns the cap off.
    pub fn new(max_per_user: usize) -> Arc<Self> {
        Arc::new(SessionCap {
            max_per_user,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one of `user_id`'s slots; `None` when the user already holds
    /// the most sessions allowed. The slot is given back when dropped.
    pub fn acquire(self: &Arc<Self>, user_id: &str) -> Option<SessionSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let user: Arc<str> = match open.get_key_value(user_id) {
            Some((key, &count)) => {
                if self.max_per_user != 0 && count >= self.max_per_user {
                    return None;
                }
                key.clone()
            }
            None => Arc::from(user_id),
        };
        *open.entry(user.clone()).or_insert(0) += 1;
        Some(SessionSlot {
            cap: self.clone(),
            user,
        })
    }

    /// Sessions `user_id` holds open on this node now.
    #[cfg(test)]
    fn open_for(&self, user_id: &str) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(user_id).copied().unwrap_or(0)
    }

    fn release(&self, user: &str) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                open.remove(user);
            }
        }
    }
}

/// One open session of one user; gives its place back when dropped.
pub struct SessionSlot {
    cap: Arc<SessionCap>,
    user: Arc<str>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.cap.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_at_most_the_cap_and_a_closed_session_frees_a_place() {
        let cap = SessionCap::new(2);
        let a = cap.acquire("alice");
        let b = cap.acquire("alice");
        assert!(a.is_some() && b.is_some());
        assert!(cap.acquire("alice").is_none());
        // Another user is not affected.
        let other = cap.acquire("bob");
        assert!(other.is_some());
        drop(a);
        assert_eq!(cap.open_for("alice"), 1);
        assert!(cap.acquire("alice").is_some());
    }

    #[test]
    fn users_with_no_sessions_are_forgotten() {
        let cap = SessionCap::new(1);
        drop(cap.acquire("alice"));
        assert_eq!(cap.open_for("alice"), 0);
        let open = cap.open.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(open.is_empty());
    }

    #[test]
    fn zero_means_no_cap() {
        let cap = SessionCap::new(0);
        let slots: Vec<_> = (0..1000).filter_map(|_| cap.acquire("alice")).collect();
        assert_eq!(slots.len(), 1000);
        drop(slots);
        assert_eq!(cap.open_for("alice"), 0);
    }
}
