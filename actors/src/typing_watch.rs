//! The typing indicators one connection shows, so that each one ends.
//!
//! A room ends an indicator (`active: false`) when its typist stops or
//! falls silent for the typing TTL. But the room keeps that timer in its
//! actor: when the room's owner node dies or drains, the room starts again
//! on another node without it, and nobody would ever end the indicators it
//! had started. So each connection's writer also watches what it has shown
//! and ends an indicator itself a little after the room should have; an
//! `active: false` that ends nothing shown is dropped, so each indicator
//! ends exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much later than the room the connection ends an indicator itself:
/// room for the room's own `active: false` to arrive first.
pub const GRACE: Duration = Duration::from_secs(1);

/// The typing indicators a connection has shown and not yet ended.
#[derive(Debug)]
pub struct TypingWatch {
    /// How long an indicator lasts without a refresh (the room's TTL plus [`GRACE`]).
    lasts: Duration,
    /// (room, typist) → when the indicator runs out.
    shown: HashMap<(Arc<str>, Arc<str>), Instant>,
}

impl TypingWatch {
    /// A watch for indicators the rooms end after `ttl` without a refresh.
    pub fn new(ttl: Duration) -> Self {
        TypingWatch {
            lasts: ttl + GRACE,
            shown: HashMap::new(),
        }
    }

    /// Whether to write a typing event of `user` in `room` that arrived at
    /// `now`. Every `active: true` is written and (re)starts the watch; an
    /// `active: false` is written only if it ends an indicator shown.
    pub fn pass(&mut self, room: &Arc<str>, user: &Arc<str>, active: bool, now: Instant) -> bool {
        let key = (room.clone(), user.clone());
        if active {
            self.shown.insert(key, now + self.lasts);
            true
        } else {
            self.shown.remove(&key).is_some()
        }
    }

    /// When the next shown indicator runs out, if any is shown.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.shown.values().min().copied()
    }

    /// The indicators that ran out by `now`, as (room, typist), forgotten
    /// here: the caller writes `active: false` for each.
    pub fn expired(&mut self, now: Instant) -> Vec<(Arc<str>, Arc<str>)> {
        let done: Vec<(Arc<str>, Arc<str>)> = self
            .shown
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in &done {
            self.shown.remove(key);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Arc<str>, Arc<str>, Arc<str>) {
        (Arc::from("r1"), Arc::from("r2"), Arc::from("bob"))
    }

    #[test]
    fn an_indicator_the_room_ends_is_ended_once() {
        let (r1, _, bob) = ids();
        let mut w = TypingWatch::new(Duration::from_secs(8));
        let t0 = Instant::now();
        assert!(w.pass(&r1, &bob, true, t0));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(9)));
        // The room's own end is written, and nothing is left to expire.
        assert!(w.pass(&r1, &bob, false, t0 + Duration::from_secs(8)));
        assert_eq!(w.next_deadline(), None);
        assert!(w.expired(t0 + Duration::from_secs(60)).is_empty());
        // A second end (or one for an indicator never shown) is dropped.
        assert!(!w.pass(&r1, &bob, false, t0 + Duration::from_secs(9)));
    }

    #[test]
    fn an_indicator_the_room_forgot_runs_out_here() {
        let (r1, r2, bob) = ids();
        let mut w = TypingWatch::new(Duration::from_secs(8));
        let t0 = Instant::now();
        w.pass(&r1, &bob, true, t0);
        w.pass(&r2, &bob, true, t0 + Duration::from_secs(2));
        // A refresh moves the end.
        w.pass(&r1, &bob, true, t0 + Duration::from_secs(5));
        assert!(w.expired(t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(
            w.expired(t0 + Duration::from_secs(11)),
            vec![(r2.clone(), bob.clone())]
        );
        assert_eq!(
            w.expired(t0 + Duration::from_secs(14)),
            vec![(r1.clone(), bob.clone())]
        );
        // The room's late end then ends nothing: dropped.
        assert!(!w.pass(&r1, &bob, false, t0 + Duration::from_secs(15)));
    }
}
