//! Per-connection message ordering: merges live events with `sync` replays.
//!
//! A client that syncs while messages keep arriving must see every message of
//! a room exactly once and in seq order. The socket writer feeds every
//! `message` it is about to write through a [`DeliveryOrder`], which
//! - holds live messages of a room while that room is being replayed and
//!   releases the ones the replay did not cover when the replay ends;
//! - remembers, per room, the contiguous range of seqs already written on
//!   this connection and drops anything inside it;
//! - notices a live message that skips seqs after ones already written (a
//!   delivery lost on the way, e.g. from a node whose view of the cluster
//!   was not complete yet): it holds the room as a replay would and asks for
//!   the missing seqs to be replayed from storage ([`Verdict::Gap`]);
//! - does the same when a room's owner says how far the room has gone (a
//!   head notice, [`DeliveryOrder::head`]) and the connection wrote less,
//!   so that a lost *last* message is found too;
//! - when a replay ends, releases the held messages only as far as they
//!   follow on without a gap, and asks for another replay past that
//!   ([`Released::repair_after`]) unless the replay was itself a repair that
//!   found nothing new (storage does not have the seqs: no endless loop).

use std::collections::HashMap;
use std::sync::Arc;

use crate::metrics::{GaugedBytes, METRICS};

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write it now.
    Write,
    /// Already written on this connection: drop it.
    Duplicate,
    /// Its room is being replayed: it was held and comes back from [`DeliveryOrder::end_sync`].
    Held,
    /// Seqs after `after` up to this one were never written here: it was
    /// held, and its room must be replayed from `after` (then ended with
    /// [`DeliveryOrder::end_sync`]) to fill the gap.
    Gap {
        /// The highest seq of the room written on this connection.
        after: u64,
    },
}

/// A live message waiting for the first `sync`: (room, seq, serialized event).
type Waiting = (Arc<str>, u64, Arc<str>);

/// What the end of a replay lets out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// Frames to write now, in seq order.
    pub frames: Vec<Arc<str>>,
    /// Seqs after this one are still missing: the room stays held and must
    /// be replayed from here (then ended again).
    pub repair_after: Option<u64>,
}

/// A room whose live messages are held during a replay.
#[derive(Debug, Default)]
struct Held {
    /// The held messages: (seq, serialized event).
    msgs: Vec<(u64, Arc<str>)>,
    /// The highest head notice seen while held (0: none).
    head: u64,
    /// Held for a gap repair (rather than a client `sync`).
    repair: bool,
    /// The highest seq written when the hold started (a repair's `after`).
    top_at_hold: u64,
}

impl Held {
    /// A hold for a gap repair from `top`.
    fn repair(top: u64, msgs: Vec<(u64, Arc<str>)>, head: u64) -> Held {
        Held {
            msgs,
            head,
            repair: true,
            top_at_hold: top,
        }
    }
}

/// Ordering state of one connection. Empty (no allocation) until used.
#[derive(Debug, Default)]
pub struct DeliveryOrder {
    written: HashMap<Arc<str>, Spans>,
    held: HashMap<Arc<str>, Held>,
    /// Before the connection's first `sync` (or other request), live
    /// messages wait here, so that a reconnecting client that syncs first
    /// sees its rooms in order even if messages arrive before its `sync`.
    gate: Option<Vec<Waiting>>,
    /// A client `sync` has started on this connection.
    client_synced: bool,
    /// Bytes of the messages in `held` and `gate`.
    held_bytes: HeldBytes,
}

/// A connection's held-back bytes, also counted node-wide in
/// `parley_held_message_bytes` (and counted out when the connection's
/// state is dropped).
#[derive(Debug)]
struct HeldBytes(GaugedBytes);

impl Default for HeldBytes {
    fn default() -> Self {
        HeldBytes(GaugedBytes::new(&METRICS.held_message_bytes, 0))
    }
}

/// The bytes of held messages' events.
fn bytes_of<'a>(jsons: impl Iterator<Item = &'a Arc<str>>) -> usize {
    jsons.map(|json| json.len()).sum()
}

impl DeliveryOrder {
    /// A new connection's state: live messages wait for the first `sync`
    /// (see [`DeliveryOrder::open_gate`]).
    pub fn gated() -> Self {
        DeliveryOrder {
            gate: Some(Vec::new()),
            ..Default::default()
        }
    }

    /// Whether live messages still wait for the first `sync`.
    pub fn is_gated(&self) -> bool {
        self.gate.is_some()
    }

    /// Stops waiting for a `sync`; returns the waiting messages to write now, in order.
    pub fn open_gate(&mut self) -> Vec<Arc<str>> {
        let Some(waiting) = self.gate.take() else {
            return Vec::new();
        };
        self.held_bytes
            .0
            .sub(bytes_of(waiting.iter().map(|(_, _, json)| json)));
        waiting
            .into_iter()
            .filter(|(room, seq, _)| self.admit(room, *seq) == Verdict::Write)
            .map(|(_, _, json)| json)
            .collect()
    }

    /// Starts replays of these rooms, each after the seq the client says it
    /// has: live messages of them are held from now on. Opens the gate:
    /// returns the waiting messages of other rooms to write now.
    ///
    /// Gap repairs never write a message twice. Nor does the connection's
    /// first client `sync` (a reconnect's) where what was written live
    /// before it follows on from its cursor. Where it does not (the sync
    /// came late, after live messages above a hole: the client has 4 and 5
    /// and asks from 0), skipping them would write 1..=3 after 5, and a
    /// client that keeps the highest seq it saw would drop those; so, as
    /// for a later client `sync` (which asks again on purpose: the client
    /// dropped what it had), the seqs written above its cursor count as not
    /// written and the replay sends everything after it in order.
    pub fn start_sync(&mut self, rooms: &[(Arc<str>, u64)], client: bool) -> Vec<Arc<str>> {
        let later = client && self.client_synced;
        let first = client && !self.client_synced;
        self.client_synced |= client;
        for (r, after) in rooms {
            self.held.entry(r.clone()).or_default();
            if let Some(spans) = self.written.get_mut(r) {
                if later || (first && !spans.follow_on_from(*after)) {
                    spans.truncate(*after);
                }
            }
        }
        let waiting = self.gate.take().unwrap_or_default();
        let mut now = Vec::new();
        for (room, seq, json) in waiting {
            match self.held.get_mut(&room) {
                Some(h) => h.msgs.push((seq, json)),
                None => {
                    self.held_bytes.0.sub(json.len());
                    if self.admit(&room, seq) == Verdict::Write {
                        now.push(json);
                    }
                }
            }
        }
        now
    }

    /// Number of live messages currently held.
    pub fn held_len(&self) -> usize {
        self.held.values().map(|h| h.msgs.len()).sum::<usize>()
            + self.gate.as_ref().map_or(0, Vec::len)
    }

    /// Bytes of the live messages currently held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes.0.bytes()
    }

    /// Decides about a live message.
    pub fn live(&mut self, room: &Arc<str>, seq: u64, json: &Arc<str>) -> Verdict {
        if let Some(g) = self.gate.as_mut() {
            g.push((room.clone(), seq, json.clone()));
            self.held_bytes.0.add(json.len());
            return Verdict::Held;
        }
        if let Some(h) = self.held.get_mut(room) {
            h.msgs.push((seq, json.clone()));
            self.held_bytes.0.add(json.len());
            return Verdict::Held;
        }
        // One lookup on the hot path: the gap check and the admission share it.
        let Some(spans) = self.written.get_mut(room) else {
            return self.admit(room, seq);
        };
        match spans.top() {
            Some(top) if seq > top.saturating_add(1) => {
                self.held_bytes.0.add(json.len());
                self.held.insert(
                    room.clone(),
                    Held::repair(top, vec![(seq, json.clone())], 0),
                );
                Verdict::Gap { after: top }
            }
            _ => spans.admit(seq),
        }
    }

    /// Takes in a head notice: the room's owner has committed up to `seq`.
    /// Returns the seq to replay the room after when this connection wrote
    /// less (the room is then held, as for [`Verdict::Gap`]). A room held
    /// already checks the head when its replay ends; a room never written
    /// here, or a connection still waiting for its first `sync`, has
    /// nothing to compare with.
    pub fn head(&mut self, room: &Arc<str>, seq: u64) -> Option<u64> {
        if self.gate.is_some() {
            return None;
        }
        if let Some(h) = self.held.get_mut(room) {
            h.head = h.head.max(seq);
            return None;
        }
        let top = self.written.get(room)?.top()?;
        if seq <= top {
            return None;
        }
        self.held
            .insert(room.clone(), Held::repair(top, Vec::new(), seq));
        Some(top)
    }

    /// Decides about a replayed message.
    pub fn replayed(&mut self, room: &Arc<str>, seq: u64) -> Verdict {
        self.admit(room, seq)
    }

    /// Ends the replay of a room that started after `after` (the client has
    /// every message up to it). Releases the held live messages in seq order
    /// as far as they follow on without a gap; a gap left (between them, or
    /// up to a head notice) keeps the room held and asks for a replay from
    /// the highest seq written, unless this was a repair that wrote nothing
    /// new: then storage does not have the missing seqs, and everything is
    /// let out as it is.
    pub fn end_sync(&mut self, room: &Arc<str>, after: u64) -> Released {
        let spans = self.written.entry(room.clone()).or_default();
        spans.insert(after);
        let Some(held) = self.held.remove(room) else {
            return Released::default();
        };
        self.held_bytes
            .0
            .sub(bytes_of(held.msgs.iter().map(|(_, json)| json)));
        let top = spans.top().unwrap_or(after);
        let fruitless = held.repair && top <= held.top_at_hold;
        let mut msgs = held.msgs;
        msgs.sort_by_key(|(seq, _)| *seq);
        let mut frames = Vec::new();
        let mut rest = msgs.into_iter();
        while let Some((seq, json)) = rest.next() {
            let top = spans.top().unwrap_or(after);
            if !fruitless && seq > top.saturating_add(1) {
                let mut msgs = vec![(seq, json)];
                msgs.extend(rest);
                return self.hold_for_repair(room, top, msgs, held.head, frames);
            }
            if spans.admit(seq) == Verdict::Write {
                frames.push(json);
            }
        }
        let top = spans.top().unwrap_or(after);
        if !fruitless && held.head > top {
            return self.hold_for_repair(room, top, Vec::new(), held.head, frames);
        }
        Released {
            frames,
            repair_after: None,
        }
    }

    /// Holds `room` again, with `msgs` and the `head` seen, for a repair
    /// from `top`; `frames` go out now.
    fn hold_for_repair(
        &mut self,
        room: &Arc<str>,
        top: u64,
        msgs: Vec<(u64, Arc<str>)>,
        head: u64,
        frames: Vec<Arc<str>>,
    ) -> Released {
        self.held_bytes
            .0
            .add(bytes_of(msgs.iter().map(|(_, json)| json)));
        self.held
            .insert(room.clone(), Held::repair(top, msgs, head));
        Released {
            frames,
            repair_after: Some(top),
        }
    }

    /// Ends the hold of a room whose replay stopped short: its held live
    /// messages go out in seq order, whatever is missing between them.
    pub fn release(&mut self, room: &Arc<str>) -> Vec<Arc<str>> {
        let Some(held) = self.held.remove(room) else {
            return Vec::new();
        };
        self.held_bytes
            .0
            .sub(bytes_of(held.msgs.iter().map(|(_, json)| json)));
        let mut msgs = held.msgs;
        msgs.sort_by_key(|(seq, _)| *seq);
        msgs.into_iter()
            .filter(|(seq, _)| self.admit(room, *seq) == Verdict::Write)
            .map(|(_, json)| json)
            .collect()
    }

    fn admit(&mut self, room: &Arc<str>, seq: u64) -> Verdict {
        // `get_mut` first: the hot path (a room already seen) clones no Arc.
        let spans = match self.written.get_mut(room) {
            Some(spans) => spans,
            None => self.written.entry(room.clone()).or_default(),
        };
        spans.admit(seq)
    }
}

/// Seqs written on a connection, as sorted disjoint inclusive ranges.
///
/// Live delivery and replays each write contiguous runs, so there are
/// almost always one or two ranges.
#[derive(Debug, Default)]
struct Spans(Vec<(u64, u64)>);

impl Spans {
    /// The highest seq written, if any.
    fn top(&self) -> Option<u64> {
        self.0.last().map(|(_, b)| *b)
    }

    /// Records `seq` as written: `Write` if it is new, `Duplicate` if not.
    fn admit(&mut self, seq: u64) -> Verdict {
        if self.contains(seq) {
            Verdict::Duplicate
        } else {
            self.insert(seq);
            Verdict::Write
        }
    }

    /// Whether the seqs written above `seq` run on from it without a hole
    /// (or there are none): a replay after `seq` then has only later seqs
    /// to write.
    fn follow_on_from(&self, seq: u64) -> bool {
        let mut above = self.0.iter().filter(|(_, b)| *b > seq);
        match (above.next(), above.next()) {
            (None, _) => true,
            (Some((a, _)), None) => *a <= seq.saturating_add(1),
            _ => false,
        }
    }

    /// Forgets every seq above `seq`.
    fn truncate(&mut self, seq: u64) {
        self.0.retain(|(a, _)| *a <= seq);
        if let Some((_, b)) = self.0.last_mut() {
            *b = (*b).min(seq);
        }
    }

    fn contains(&self, seq: u64) -> bool {
        self.0.iter().any(|(a, b)| *a <= seq && seq <= *b)
    }

    fn insert(&mut self, seq: u64) {
        let i = self.0.partition_point(|(_, b)| *b < seq.saturating_sub(1));
        match self.0.get_mut(i) {
            Some((a, b)) if *a <= seq.saturating_add(1) => {
                *a = (*a).min(seq);
                *b = (*b).max(seq);
            }
            _ => self.0.insert(i, (seq, seq)),
        }
        // Merge with the next range if they now touch.
        if i + 1 < self.0.len() && self.0[i].1.saturating_add(1) >= self.0[i + 1].0 {
            let (_, b) = self.0.remove(i + 1);
            self.0[i].1 = self.0[i].1.max(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: u64) -> Arc<str> {
        Arc::from(format!("m{s}"))
    }

    /// The end of a replay that lets these seqs out and leaves no gap.
    fn out(seqs: &[u64]) -> Released {
        Released {
            frames: seqs.iter().map(|s| j(*s)).collect(),
            repair_after: None,
        }
    }

    #[test]
    fn live_duplicates_are_dropped() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        assert_eq!(o.live(&r, 1, &j(1)), Verdict::Write);
        assert_eq!(o.live(&r, 2, &j(2)), Verdict::Write);
        assert_eq!(o.live(&r, 2, &j(2)), Verdict::Duplicate);
    }

    #[test]
    fn live_during_sync_is_held_and_merged_in_order() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        o.start_sync(&[(r.clone(), 0)], true);
        // Live 6 and 7 arrive while 1..=6 are replayed.
        assert_eq!(o.live(&r, 6, &j(6)), Verdict::Held);
        assert_eq!(o.live(&r, 7, &j(7)), Verdict::Held);
        for s in 1..=6 {
            assert_eq!(o.replayed(&r, s), Verdict::Write);
        }
        assert_eq!(o.end_sync(&r, 0), out(&[7]));
        assert_eq!(o.live(&r, 8, &j(8)), Verdict::Write);
        assert_eq!(o.held_len(), 0);
    }

    #[test]
    fn a_later_client_sync_sends_everything_after_its_cursor_again() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        for s in 1..=5 {
            assert_eq!(o.live(&r, s, &j(s)), Verdict::Write);
        }
        let replay = |o: &mut DeliveryOrder| -> Vec<u64> {
            (3..=5)
                .filter(|s| o.replayed(&r, *s) == Verdict::Write)
                .collect()
        };
        // The first sync (a reconnect whose sync came late, from a cursor
        // that what was written follows on from) and a repair skip what was
        // already written.
        o.start_sync(&[(r.clone(), 2)], true);
        assert_eq!(replay(&mut o), Vec::<u64>::new());
        assert_eq!(o.end_sync(&r, 2), out(&[]));
        o.start_sync(&[(r.clone(), 2)], false);
        assert_eq!(replay(&mut o), Vec::<u64>::new());
        assert_eq!(o.end_sync(&r, 2), out(&[]));
        // A later client sync from 2 (it dropped what it had): 3..=5 again.
        o.start_sync(&[(r.clone(), 2)], true);
        assert_eq!(replay(&mut o), vec![3, 4, 5]);
        assert_eq!(o.end_sync(&r, 2), out(&[]));
        // Within that replay and afterwards, nothing twice.
        assert_eq!(o.replayed(&r, 4), Verdict::Duplicate);
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Duplicate);
        assert_eq!(o.live(&r, 6, &j(6)), Verdict::Write);
        // A cursor at or above what was written forgets nothing.
        o.start_sync(&[(r.clone(), 9)], true);
        assert_eq!(o.end_sync(&r, 9), out(&[]));
        assert_eq!(o.live(&r, 6, &j(6)), Verdict::Duplicate);
    }

    #[test]
    fn a_late_first_sync_from_below_a_hole_sends_everything_after_its_cursor_in_order() {
        let mut o = DeliveryOrder::default();
        let (r, other): (Arc<str>, Arc<str>) = (Arc::from("r"), Arc::from("o"));
        // The gate opened before the client's sync; 4 and 5 came live.
        for s in 4..=5 {
            assert_eq!(o.live(&r, s, &j(s)), Verdict::Write);
        }
        for s in 1..=2 {
            assert_eq!(o.live(&other, s, &j(s)), Verdict::Write);
        }
        o.start_sync(&[(r.clone(), 0), (other.clone(), 0)], true);
        let written: Vec<u64> = (1..=5)
            .filter(|s| o.replayed(&r, *s) == Verdict::Write)
            .collect();
        assert_eq!(written, vec![1, 2, 3, 4, 5], "in order, 4 and 5 again");
        assert_eq!(o.end_sync(&r, 0), out(&[]));
        // `other` had 1 and 2 from its cursor on: nothing twice there.
        assert_eq!(o.replayed(&other, 1), Verdict::Duplicate);
        assert_eq!(o.replayed(&other, 2), Verdict::Duplicate);
        assert_eq!(o.end_sync(&other, 0), out(&[]));
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Duplicate);
        assert_eq!(o.live(&r, 6, &j(6)), Verdict::Write);
    }

    #[test]
    fn messages_before_the_first_sync_wait_for_it() {
        let mut o = DeliveryOrder::gated();
        let (r, other): (Arc<str>, Arc<str>) = (Arc::from("r"), Arc::from("o"));
        // A reconnecting client saw up to 5; 8 arrives live before its sync.
        assert_eq!(o.live(&r, 8, &j(8)), Verdict::Held);
        assert_eq!(o.live(&other, 1, &j(1)), Verdict::Held);
        // The sync of `r` takes 8 into its replay merge; `other` goes out now.
        assert_eq!(o.start_sync(&[(r.clone(), 5)], true), vec![j(1)]);
        for s in 6..=7 {
            assert_eq!(o.replayed(&r, s), Verdict::Write);
        }
        assert_eq!(o.end_sync(&r, 5), out(&[8]));
        assert!(!o.is_gated());
        // Without a sync, opening the gate releases everything in order.
        let mut o = DeliveryOrder::gated();
        o.live(&r, 3, &j(3));
        o.live(&r, 4, &j(4));
        assert_eq!(o.open_gate(), vec![j(3), j(4)]);
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Write);
    }

    #[test]
    fn a_live_message_past_a_gap_is_held_until_the_gap_is_replayed() {
        let mut o = DeliveryOrder::default();
        let (r, other): (Arc<str>, Arc<str>) = (Arc::from("r"), Arc::from("o"));
        // The first message of a room on a connection says nothing about gaps.
        assert_eq!(o.live(&r, 4, &j(4)), Verdict::Write);
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Write);
        // 6 and 7 were lost on the way; 8 arrives.
        assert_eq!(o.live(&r, 8, &j(8)), Verdict::Gap { after: 5 });
        // Later live messages of the room wait too; other rooms do not.
        assert_eq!(o.live(&r, 9, &j(9)), Verdict::Held);
        assert_eq!(o.live(&other, 1, &j(1)), Verdict::Write);
        assert_eq!(o.held_len(), 2);
        // The replay from 5 writes 6..=8 (8 is in storage too); the end
        // releases what it did not write.
        for s in 6..=8 {
            assert_eq!(o.replayed(&r, s), Verdict::Write);
        }
        assert_eq!(o.end_sync(&r, 5), out(&[9]));
        assert_eq!(o.live(&r, 10, &j(10)), Verdict::Write);
        assert_eq!(o.held_len(), 0);
        // A replay that stopped short (storage error) still releases the
        // held messages.
        assert_eq!(o.live(&r, 12, &j(12)), Verdict::Gap { after: 10 });
        assert_eq!(o.release(&r), vec![j(12)]);
    }

    /// The held bytes counted from scratch.
    fn recount(o: &DeliveryOrder) -> usize {
        bytes_of(o.held.values().flat_map(|h| h.msgs.iter().map(|(_, j)| j)))
            + bytes_of(o.gate.iter().flatten().map(|(_, _, j)| j))
    }

    #[test]
    fn held_bytes_follow_every_hold_and_release() {
        let mut o = DeliveryOrder::gated();
        let (r, other): (Arc<str>, Arc<str>) = (Arc::from("r"), Arc::from("o"));
        let check = |o: &DeliveryOrder, want: usize| {
            assert_eq!(o.held_bytes(), recount(o));
            assert_eq!(o.held_bytes(), want);
        };
        o.live(&r, 8, &j(8));
        o.live(&other, 1, &j(1));
        check(&o, 4);
        // `other` goes out, `r`'s 8 moves into its replay's hold.
        o.start_sync(&[(r.clone(), 5)], true);
        check(&o, 2);
        o.live(&r, 10, &j(10));
        check(&o, 5);
        // 9 is missing: 8 goes out, 10 stays held for a repair.
        o.replayed(&r, 6);
        o.replayed(&r, 7);
        let released = o.end_sync(&r, 5);
        assert_eq!(released.repair_after, Some(8));
        check(&o, 3);
        assert_eq!(o.live(&other, 2, &j(2)), Verdict::Write);
        check(&o, 3);
        assert_eq!(o.live(&other, 5, &j(5)), Verdict::Gap { after: 2 });
        check(&o, 5);
        o.release(&r);
        o.release(&other);
        check(&o, 0);
        let mut o = DeliveryOrder::gated();
        o.live(&r, 1, &j(1));
        o.open_gate();
        check(&o, 0);
    }

    #[test]
    fn held_bytes_count_node_wide_while_held() {
        use std::sync::atomic::Ordering;
        let node_wide = || METRICS.held_message_bytes.load(Ordering::Relaxed);
        let mut o = DeliveryOrder::gated();
        let big: Arc<str> = Arc::from("m".repeat(1 << 20));
        o.live(&Arc::from("r"), 1, &big);
        // Other tests' holds only add to the count, never take ours away.
        assert!(node_wide() >= 1 << 20);
        drop(o);
    }

    #[test]
    fn a_head_past_what_was_written_asks_for_a_repair() {
        let mut o = DeliveryOrder::default();
        let (r, other): (Arc<str>, Arc<str>) = (Arc::from("r"), Arc::from("o"));
        assert_eq!(o.live(&r, 1, &j(1)), Verdict::Write);
        assert_eq!(o.live(&r, 2, &j(2)), Verdict::Write);
        // Nothing to do for what was written, or for a room never written.
        assert_eq!(o.head(&r, 2), None);
        assert_eq!(o.head(&other, 9), None);
        // 3 was the room's last message and never came: replay after 2.
        assert_eq!(o.head(&r, 3), Some(2));
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Held);
        // A later head while held is checked when the replay ends.
        assert_eq!(o.head(&r, 6), None);
        assert_eq!(o.replayed(&r, 3), Verdict::Write);
        assert_eq!(
            o.end_sync(&r, 2),
            Released {
                frames: vec![],
                repair_after: Some(3)
            },
            "4 is still missing before 5"
        );
        for s in 4..=6 {
            assert_eq!(o.replayed(&r, s), Verdict::Write);
        }
        assert_eq!(o.end_sync(&r, 3), out(&[]));
        assert_eq!(o.held_len(), 0);
        assert_eq!(o.live(&r, 7, &j(7)), Verdict::Write);
        // A connection waiting for its first sync compares nothing: the
        // sync reads storage after the head was committed.
        let mut o = DeliveryOrder::gated();
        assert_eq!(o.head(&r, 3), None);
    }

    #[test]
    fn a_sync_that_ends_short_of_its_held_messages_repairs_the_gap() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        // The client had 5; the replay read 6 before 7 was committed, and
        // 7's live delivery was lost; 8 is held.
        o.start_sync(&[(r.clone(), 5)], true);
        assert_eq!(o.live(&r, 8, &j(8)), Verdict::Held);
        assert_eq!(o.replayed(&r, 6), Verdict::Write);
        assert_eq!(
            o.end_sync(&r, 5),
            Released {
                frames: vec![],
                repair_after: Some(6)
            }
        );
        assert_eq!(o.live(&r, 9, &j(9)), Verdict::Held, "still held");
        for s in 7..=8 {
            assert_eq!(o.replayed(&r, s), Verdict::Write);
        }
        assert_eq!(o.end_sync(&r, 6), out(&[9]));
    }

    #[test]
    fn a_sync_from_zero_lets_the_first_live_message_show_a_gap() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        // An empty room, synced: seq 1 is lost, 2 arrives.
        o.start_sync(&[(r.clone(), 0)], true);
        assert_eq!(o.end_sync(&r, 0), out(&[]));
        assert_eq!(o.live(&r, 2, &j(2)), Verdict::Gap { after: 0 });
        // The client said it has 4: a live 4 is not sent again.
        let mut o = DeliveryOrder::default();
        o.start_sync(&[(r.clone(), 4)], true);
        assert_eq!(o.end_sync(&r, 4), out(&[]));
        assert_eq!(o.live(&r, 4, &j(4)), Verdict::Duplicate);
        assert_eq!(o.live(&r, 5, &j(5)), Verdict::Write);
    }

    #[test]
    fn a_repair_that_finds_nothing_new_lets_everything_out() {
        let mut o = DeliveryOrder::default();
        let r: Arc<str> = Arc::from("r");
        assert_eq!(o.live(&r, 1, &j(1)), Verdict::Write);
        assert_eq!(o.live(&r, 3, &j(3)), Verdict::Gap { after: 1 });
        // Storage had nothing after 1: asking again would loop.
        assert_eq!(o.end_sync(&r, 1), out(&[3]));
        assert_eq!(o.head(&r, 9), Some(3));
        assert_eq!(o.end_sync(&r, 3), out(&[]));
        assert_eq!(o.held_len(), 0);
        assert_eq!(o.live(&r, 4, &j(4)), Verdict::Write);
    }

    #[test]
    fn spans_merge() {
        let mut s = Spans::default();
        for x in [5, 3, 4, 9, 7, 8, 6, 1] {
            s.insert(x);
        }
        assert_eq!(s.0, vec![(1, 1), (3, 9)]);
        s.insert(2);
        assert_eq!(s.0, vec![(1, 9)]);
        assert!(s.contains(9) && !s.contains(10));
        let mut s = Spans(vec![(1, 3), (5, 9), (12, 14)]);
        s.truncate(6);
        assert_eq!(s.0, vec![(1, 3), (5, 6)]);
        s.truncate(4);
        assert_eq!(s.0, vec![(1, 3)]);
        s.truncate(0);
        assert_eq!(s.0, vec![]);
    }
}
