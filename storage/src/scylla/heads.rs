//! The heads this store knows to be fully written.
//!
//! After a commit this store claimed and copied into place, or a batch it
//! rolled forward, it remembers the room's head. A commit at exactly that
//! head can skip the linearizable head read and the roll-forward: if
//! another owner moved the head meanwhile, the claim fails anyway. Entries
//! are forgotten whenever a commit's outcome is unknown or the head moved.
//! Bounded: when full, it is simply cleared (the cost is one extra Paxos
//! read per room afterwards).

use std::collections::HashMap;
use std::sync::Mutex;

/// Rooms whose cached head is dropped all at once when exceeded.
pub const HEAD_CACHE_MAX: usize = 100_000;

/// Room id -> a head whose batches are all in place.
#[derive(Debug, Default)]
pub struct HeadCache {
    heads: Mutex<HashMap<String, u64>>,
}

impl HeadCache {
    /// Whether `head` is the known, fully written head of `room_id`.
    pub fn is_known(&self, room_id: &str, head: u64) -> bool {
        self.heads
            .lock()
            .map(|m| m.get(room_id) == Some(&head))
            .unwrap_or(false)
    }

    /// Records that every batch of `room_id` up to `head` is in place.
    pub fn remember(&self, room_id: &str, head: u64) {
        if let Ok(mut m) = self.heads.lock() {
            if m.len() >= HEAD_CACHE_MAX && !m.contains_key(room_id) {
                m.clear();
            }
            m.insert(room_id.to_owned(), head);
        }
    }

    /// Forgets what is known about `room_id`.
    pub fn forget(&self, room_id: &str) {
        if let Ok(mut m) = self.heads.lock() {
            m.remove(room_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_forgets() {
        let c = HeadCache::default();
        assert!(!c.is_known("r", 0));
        c.remember("r", 5);
        assert!(c.is_known("r", 5));
        assert!(!c.is_known("r", 4));
        c.forget("r");
        assert!(!c.is_known("r", 5));
    }
}
