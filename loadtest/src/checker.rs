//! The correctness checker: a pure function from what the harness observed to
//! the list of broken guarantees.
//!
//! What it checks (the contract's guarantees, see `CONTRACT.md`):
//! - acks are consistent: one `client_msg_id` never gets two seqs, one seq
//!   never belongs to two `client_msg_id`s;
//! - history is gapless from seq 1 and holds every acked message with the
//!   acked seq, `message_id` and `client_msg_id`;
//! - every member session that ended connected and caught up (after `sync`
//!   for sessions that reconnected) received every committed message of each
//!   of its rooms after its base seq exactly once, in seq order, with no
//!   gaps, with the content history holds;
//! - sessions that ended disconnected received a gapless, duplicate-free,
//!   ordered prefix.
//!
//! Delivery streams are recorded incrementally by [`DeliveryStream`] (a few
//! ranges and a fingerprint per session and room, not every message), so the
//! checker scales to millions of deliveries.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

/// Most anomalies one stream keeps in detail; the rest are only counted.
const ANOMALY_DETAIL_MAX: usize = 64;

/// What a session saw in one room, folded as it arrives.
#[derive(Debug, Clone)]
pub struct DeliveryStream {
    base: u64,
    spans: Vec<(u64, u64)>,
    max_seen: u64,
    count: u64,
    fingerprint: u64,
    anomalies: Vec<Anomaly>,
    anomalies_dropped: u64,
}

/// A delivery that broke order or uniqueness when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anomaly {
    Duplicate { seq: u64 },
    OutOfOrder { seq: u64, after: u64 },
}

impl DeliveryStream {
    /// A stream that expects every seq after `base` (the room head when the
    /// session joined; 0 for a fresh room).
    pub fn new(base: u64) -> Self {
        DeliveryStream {
            base,
            spans: Vec::new(),
            max_seen: base,
            count: 0,
            fingerprint: 0,
            anomalies: Vec::new(),
            anomalies_dropped: 0,
        }
    }

    /// Records one received `message` event.
    pub fn record(&mut self, seq: u64, message_id: &str) {
        self.count += 1;
        if self.contains(seq) {
            self.note(Anomaly::Duplicate { seq });
            return;
        }
        if seq < self.max_seen {
            self.note(Anomaly::OutOfOrder {
                seq,
                after: self.max_seen,
            });
        }
        self.insert(seq);
        self.max_seen = self.max_seen.max(seq);
        self.fingerprint = self.fingerprint.wrapping_add(entry_hash(seq, message_id));
    }

    /// Highest seq received (the base when nothing was).
    pub fn last_seen(&self) -> u64 {
        self.max_seen
    }

    fn note(&mut self, a: Anomaly) {
        if self.anomalies.len() < ANOMALY_DETAIL_MAX {
            self.anomalies.push(a);
        } else {
            self.anomalies_dropped += 1;
        }
    }

    fn contains(&self, seq: u64) -> bool {
        if seq <= self.base {
            // Before the base: never expected, so seeing it is a duplicate of
            // something the session already had.
            return true;
        }
        let i = self.spans.partition_point(|&(_, hi)| hi < seq);
        i < self.spans.len() && self.spans[i].0 <= seq
    }

    fn insert(&mut self, seq: u64) {
        // The common case: extends the last span.
        if let Some(last) = self.spans.last_mut() {
            if last.1.checked_add(1) == Some(seq) {
                last.1 = seq;
                return;
            }
        }
        let i = self.spans.partition_point(|&(_, hi)| hi < seq);
        self.spans.insert(i, (seq, seq));
        // Merge with neighbours.
        if i + 1 < self.spans.len() && Some(self.spans[i + 1].0) == seq.checked_add(1) {
            self.spans[i].1 = self.spans[i + 1].1;
            self.spans.remove(i + 1);
        }
        if i > 0 && self.spans[i - 1].1.checked_add(1) == Some(seq) {
            self.spans[i - 1].1 = self.spans[i].1;
            self.spans.remove(i);
        }
    }

    /// Seqs in `(self.base, upto]` not received, as inclusive ranges.
    fn missing(&self, upto: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        // `None` once the spans reach the end of the seq space.
        let mut next = self.base.checked_add(1);
        for &(lo, hi) in &self.spans {
            let Some(n) = next else { break };
            if lo > upto {
                break;
            }
            if lo > n {
                out.push((n, lo - 1));
            }
            next = hi.checked_add(1).map(|h| h.max(n));
        }
        if let Some(n) = next.filter(|&n| n <= upto) {
            out.push((n, upto));
        }
        out
    }
}

/// A 64-bit hash of one committed message, summed into stream fingerprints.
fn entry_hash(seq: u64, message_id: &str) -> u64 {
    // FNV-1a over the seq and the id, then a final mix.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seq.to_le_bytes().iter().chain(message_id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// One `sent` ack a sender received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    /// Index of the room in [`CheckInput::rooms`].
    pub room: usize,
    /// Seq the server assigned.
    pub seq: u64,
    /// The sender's idempotency key.
    pub client_msg_id: String,
    /// Id the server assigned.
    pub message_id: String,
}

/// One message of a room's history as `GET /rooms/{id}/messages` answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Seq.
    pub seq: u64,
    /// Message id.
    pub message_id: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
}

/// Everything one session observed.
#[derive(Debug, Clone)]
pub struct SessionStreams {
    /// Human-readable name (user and session number).
    pub label: String,
    /// Whether the session ended connected and caught up to every room head.
    pub complete: bool,
    /// Its rooms (indices into [`CheckInput::rooms`]) and what it received in each.
    pub rooms: Vec<(usize, DeliveryStream)>,
}

/// The checker's input.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// Room ids, indexed by the `room` fields above.
    pub rooms: Vec<String>,
    /// Every ack every sender received (resends included).
    pub acks: Vec<AckRecord>,
    /// History per room, when it was read (`None`: not read, history checks skipped).
    pub history: Vec<Option<Vec<HistoryEntry>>>,
    /// Per room, the head sessions were told to catch up to, when it is
    /// below the history's head: history read a second time, after sends
    /// that were unanswered at the first read were committed (empty: the
    /// history's heads).
    pub targets: Vec<u64>,
    /// Every session.
    pub sessions: Vec<SessionStreams>,
}

/// Kinds of broken guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// An acked message a session should have received never arrived.
    Lost,
    /// A committed (but not acked to us) message a session should have received never arrived.
    Gap,
    /// A message arrived twice on one session.
    Duplicate,
    /// A message arrived after a higher seq of the same room.
    OutOfOrder,
    /// A session received a seq that history does not hold.
    Phantom,
    /// A session's messages differ from history's (ids do not match).
    ContentMismatch,
    /// One `client_msg_id` was acked with two different seqs.
    DoubleCommit,
    /// One seq was acked for two different messages.
    SeqConflict,
    /// An acked message is not in history.
    AckedMissingFromHistory,
    /// History holds the acked seq with another message.
    HistoryMismatch,
    /// History skips, repeats or misorders seqs.
    HistoryGap,
}

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// What broke.
    pub kind: ViolationKind,
    /// The room id.
    pub room: String,
    /// The session, when one session is concerned.
    pub session: Option<String>,
    /// First and last seq concerned (inclusive).
    pub seqs: (u64, u64),
    /// Details for a human.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        write!(f, "{kind}: room {}", self.room)?;
        if let Some(s) = &self.session {
            write!(f, ", session {s}")?;
        }
        if self.seqs.0 == self.seqs.1 {
            write!(f, ", seq {}", self.seqs.0)?;
        } else {
            write!(f, ", seqs {}..={}", self.seqs.0, self.seqs.1)?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The checker's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckOutcome {
    /// Every violation found.
    pub violations: Vec<Violation>,
    /// Sessions checked in full (ended connected and caught up).
    pub complete_sessions: usize,
    /// Sessions checked as a prefix only (ended disconnected or behind).
    pub incomplete_sessions: usize,
    /// Distinct acked messages.
    pub acked_messages: usize,
    /// Message events checked, duplicates included.
    pub deliveries_checked: u64,
}

impl CheckOutcome {
    /// Violations counted by kind.
    pub fn counts(&self) -> BTreeMap<ViolationKind, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.kind).or_insert(0) += 1;
        }
        m
    }
}

struct RoomTruth<'a> {
    /// Acked messages by seq.
    acked: BTreeMap<u64, (&'a str, &'a str)>,
    /// History by seq, when read.
    history: Option<BTreeMap<u64, &'a HistoryEntry>>,
    /// Highest seq known to be committed.
    head: u64,
    /// Seq up to which a session that caught up must hold every message.
    target: u64,
}

impl RoomTruth<'_> {
    fn fingerprint(&self, from_exclusive: u64, to: u64) -> Option<u64> {
        let h = self.history.as_ref()?;
        if to <= from_exclusive {
            // Nothing expected (a session that joined at the head): `range`
            // would panic on a start past its end.
            return Some(0);
        }
        Some(
            h.range(from_exclusive + 1..=to)
                .fold(0u64, |acc, (seq, e)| {
                    acc.wrapping_add(entry_hash(*seq, &e.message_id))
                }),
        )
    }
}

/// Runs every check and lists the violations.
pub fn check(input: &CheckInput) -> CheckOutcome {
    let mut out = CheckOutcome::default();
    let mut truths: Vec<RoomTruth> = Vec::with_capacity(input.rooms.len());
    for (i, room) in input.rooms.iter().enumerate() {
        let history = input.history.get(i).and_then(Option::as_ref);
        truths.push(check_room(room, i, input, history, &mut out.violations));
    }
    out.acked_messages = truths.iter().map(|t| t.acked.len()).sum();
    for s in &input.sessions {
        if s.complete {
            out.complete_sessions += 1;
        } else {
            out.incomplete_sessions += 1;
        }
        for (room, stream) in &s.rooms {
            out.deliveries_checked += stream.count;
            let (Some(truth), Some(room_id)) = (truths.get(*room), input.rooms.get(*room)) else {
                continue;
            };
            check_stream(room_id, s, stream, truth, &mut out.violations);
        }
    }
    out
}

fn check_room<'a>(
    room_id: &str,
    index: usize,
    input: &'a CheckInput,
    history: Option<&'a Vec<HistoryEntry>>,
    violations: &mut Vec<Violation>,
) -> RoomTruth<'a> {
    let mut by_cmid: HashMap<&str, u64> = HashMap::new();
    let mut acked: BTreeMap<u64, (&str, &str)> = BTreeMap::new();
    for a in input.acks.iter().filter(|a| a.room == index) {
        match by_cmid.get(a.client_msg_id.as_str()) {
            Some(&seq) if seq != a.seq => violations.push(Violation {
                kind: ViolationKind::DoubleCommit,
                room: room_id.to_string(),
                session: None,
                seqs: (seq.min(a.seq), seq.max(a.seq)),
                detail: format!(
                    "client_msg_id {} acked with seq {seq} and seq {}",
                    a.client_msg_id, a.seq
                ),
            }),
            Some(_) => {}
            None => {
                by_cmid.insert(&a.client_msg_id, a.seq);
            }
        }
        match acked.get(&a.seq) {
            Some(&(cmid, mid)) if cmid != a.client_msg_id || mid != a.message_id => violations
                .push(Violation {
                    kind: ViolationKind::SeqConflict,
                    room: room_id.to_string(),
                    session: None,
                    seqs: (a.seq, a.seq),
                    detail: format!(
                        "seq acked for {cmid} ({mid}) and for {} ({})",
                        a.client_msg_id, a.message_id
                    ),
                }),
            Some(_) => {}
            None => {
                acked.insert(a.seq, (&a.client_msg_id, &a.message_id));
            }
        }
    }
    let mut head = acked.keys().next_back().copied().unwrap_or(0);
    let history = history.map(|entries| {
        let mut map = BTreeMap::new();
        let mut expected = 1u64;
        for e in entries {
            if e.seq != expected {
                violations.push(Violation {
                    kind: ViolationKind::HistoryGap,
                    room: room_id.to_string(),
                    session: None,
                    seqs: (expected.min(e.seq), expected.max(e.seq)),
                    detail: format!("history has seq {} where {expected} was due", e.seq),
                });
            }
            expected = e.seq.max(expected).saturating_add(1);
            map.insert(e.seq, e);
        }
        map
    });
    if let Some(h) = &history {
        head = h.keys().next_back().copied().unwrap_or(0);
        for (&seq, &(cmid, mid)) in &acked {
            match h.get(&seq) {
                None => violations.push(Violation {
                    kind: ViolationKind::AckedMissingFromHistory,
                    room: room_id.to_string(),
                    session: None,
                    seqs: (seq, seq),
                    detail: format!("acked {cmid} ({mid}) is not in history"),
                }),
                Some(e) if e.client_msg_id != cmid || e.message_id != mid => {
                    violations.push(Violation {
                        kind: ViolationKind::HistoryMismatch,
                        room: room_id.to_string(),
                        session: None,
                        seqs: (seq, seq),
                        detail: format!(
                            "acked {cmid} ({mid}), history holds {} ({})",
                            e.client_msg_id, e.message_id
                        ),
                    })
                }
                Some(_) => {}
            }
        }
    } else {
        // Without history, the head is the highest seq anyone acked or saw.
        for s in &input.sessions {
            for (r, stream) in &s.rooms {
                if *r == index {
                    head = head.max(stream.max_seen);
                }
            }
        }
    }
    let target = input.targets.get(index).map_or(head, |&t| t.min(head));
    RoomTruth {
        acked,
        history,
        head,
        target,
    }
}

fn check_stream(
    room_id: &str,
    session: &SessionStreams,
    stream: &DeliveryStream,
    truth: &RoomTruth,
    violations: &mut Vec<Violation>,
) {
    let v = |kind, seqs: (u64, u64), detail: String| Violation {
        kind,
        room: room_id.to_string(),
        session: Some(session.label.clone()),
        seqs,
        detail,
    };
    for a in &stream.anomalies {
        match *a {
            Anomaly::Duplicate { seq } => violations.push(v(
                ViolationKind::Duplicate,
                (seq, seq),
                "received more than once".into(),
            )),
            Anomaly::OutOfOrder { seq, after } => violations.push(v(
                ViolationKind::OutOfOrder,
                (seq, seq),
                format!("received after seq {after}"),
            )),
        }
    }
    if stream.anomalies_dropped > 0 {
        violations.push(v(
            ViolationKind::Duplicate,
            (stream.base.saturating_add(1), stream.max_seen),
            format!(
                "{} more duplicate or out-of-order deliveries not listed",
                stream.anomalies_dropped
            ),
        ));
    }
    // Received beyond what history holds.
    if truth.history.is_some() && stream.max_seen > truth.head {
        violations.push(v(
            ViolationKind::Phantom,
            (truth.head + 1, stream.max_seen),
            format!("history ends at seq {}", truth.head),
        ));
    }
    let upto = if session.complete {
        truth.target
    } else {
        stream.max_seen.min(truth.head)
    };
    let missing = stream.missing(upto);
    for &(lo, hi) in &missing {
        // Split each missing range into acked (lost) and unacked (gap) parts,
        // walking only the acked seqs in it: a range can be as wide as a
        // bogus seq a broken server sent, far too many to visit one by one.
        let flush = |acked: bool, (a, b): (u64, u64), violations: &mut Vec<Violation>| {
            let n = b - a + 1;
            violations.push(v(
                if acked {
                    ViolationKind::Lost
                } else {
                    ViolationKind::Gap
                },
                (a, b),
                if acked {
                    format!("{n} acked message(s) never received")
                } else {
                    format!("{n} committed message(s) never received")
                },
            ));
        };
        // The first seq not yet assigned to a part (`None`: past u64::MAX).
        let mut next = Some(lo);
        let mut lost: Option<(u64, u64)> = None;
        for &seq in truth.acked.range(lo..=hi).map(|(seq, _)| seq) {
            match lost {
                Some((a, b)) if b.checked_add(1) == Some(seq) => lost = Some((a, seq)),
                _ => {
                    if let Some(run) = lost.take() {
                        flush(true, run, violations);
                    }
                    if let Some(n) = next.filter(|&n| n < seq) {
                        flush(false, (n, seq - 1), violations);
                    }
                    lost = Some((seq, seq));
                }
            }
            next = seq.checked_add(1);
        }
        if let Some(run) = lost {
            flush(true, run, violations);
        }
        if let Some(n) = next.filter(|&n| n <= hi) {
            flush(false, (n, hi), violations);
        }
    }
    // Content, over an unbroken stream (a session that caught up to a
    // target below the head may have part of what came after).
    let unbroken = missing.is_empty() && stream.missing(stream.max_seen).is_empty();
    if stream.anomalies.is_empty() && unbroken && stream.max_seen <= truth.head {
        if let Some(fp) = truth.fingerprint(stream.base, stream.max_seen) {
            if fp != stream.fingerprint {
                violations.push(v(
                    ViolationKind::ContentMismatch,
                    (stream.base.saturating_add(1), stream.max_seen),
                    "message ids received differ from history".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mid(seq: u64) -> String {
        format!("m{seq}")
    }

    /// A room with `n` acked messages, history holding them all, and
    /// sessions fed with the given seq sequences.
    fn input(n: u64, streams: &[(&[u64], bool)]) -> CheckInput {
        let acks = (1..=n)
            .map(|seq| AckRecord {
                room: 0,
                seq,
                client_msg_id: format!("c{seq}"),
                message_id: mid(seq),
            })
            .collect();
        let history = (1..=n)
            .map(|seq| HistoryEntry {
                seq,
                message_id: mid(seq),
                client_msg_id: format!("c{seq}"),
            })
            .collect();
        let sessions = streams
            .iter()
            .enumerate()
            .map(|(i, (seqs, complete))| {
                let mut s = DeliveryStream::new(0);
                for &seq in *seqs {
                    s.record(seq, &mid(seq));
                }
                SessionStreams {
                    label: format!("s{i}"),
                    complete: *complete,
                    rooms: vec![(0, s)],
                }
            })
            .collect();
        CheckInput {
            rooms: vec!["room".into()],
            acks,
            history: vec![Some(history)],
            targets: Vec::new(),
            sessions,
        }
    }

    fn kinds(out: &CheckOutcome) -> Vec<ViolationKind> {
        out.violations.iter().map(|v| v.kind).collect()
    }

    #[test]
    fn clean_run_passes() {
        let out = check(&input(5, &[(&[1, 2, 3, 4, 5], true), (&[1, 2, 3], false)]));
        assert!(out.violations.is_empty(), "{:?}", out.violations);
        assert_eq!(out.complete_sessions, 1);
        assert_eq!(out.incomplete_sessions, 1);
        assert_eq!(out.acked_messages, 5);
        assert_eq!(out.deliveries_checked, 8);
    }

    #[test]
    fn catches_a_lost_message() {
        let out = check(&input(5, &[(&[1, 2, 4, 5], true)]));
        assert_eq!(kinds(&out), vec![ViolationKind::Lost]);
        assert_eq!(out.violations[0].seqs, (3, 3));
        // Lost at the tail too.
        let out = check(&input(5, &[(&[1, 2, 3], true)]));
        assert_eq!(kinds(&out), vec![ViolationKind::Lost]);
        assert_eq!(out.violations[0].seqs, (4, 5));
    }

    #[test]
    fn catches_a_duplicate() {
        let out = check(&input(3, &[(&[1, 2, 2, 3], true)]));
        assert_eq!(kinds(&out), vec![ViolationKind::Duplicate]);
        assert_eq!(out.violations[0].seqs, (2, 2));
    }

    #[test]
    fn catches_a_reordering() {
        let out = check(&input(4, &[(&[1, 3, 2, 4], true)]));
        assert_eq!(kinds(&out), vec![ViolationKind::OutOfOrder]);
        assert_eq!(out.violations[0].seqs, (2, 2));
    }

    #[test]
    fn catches_a_gap_of_unacked_messages() {
        // Seq 3 was committed (history has it) but its ack never reached the
        // harness; a session skipping it is still a gap.
        let mut inp = input(4, &[(&[1, 2, 4], true)]);
        inp.acks.retain(|a| a.seq != 3);
        let out = check(&inp);
        assert_eq!(kinds(&out), vec![ViolationKind::Gap]);
        // An incomplete session with a hole inside its prefix is caught too.
        let out = check(&input(4, &[(&[1, 3], false)]));
        assert_eq!(kinds(&out), vec![ViolationKind::Lost]);
    }

    #[test]
    fn splits_a_hole_into_lost_and_gap_parts_in_seq_order() {
        // Seqs 2..=7 missing; 3, 4 and 6 were never acked to the harness.
        let mut inp = input(8, &[(&[1, 8], true)]);
        inp.acks.retain(|a| ![3, 4, 6].contains(&a.seq));
        let out = check(&inp);
        let parts: Vec<_> = out.violations.iter().map(|v| (v.kind, v.seqs)).collect();
        assert_eq!(
            parts,
            vec![
                (ViolationKind::Lost, (2, 2)),
                (ViolationKind::Gap, (3, 4)),
                (ViolationKind::Lost, (5, 5)),
                (ViolationKind::Gap, (6, 6)),
                (ViolationKind::Lost, (7, 7)),
            ]
        );
    }

    #[test]
    fn survives_absurd_seqs_from_a_broken_server() {
        // Seqs at the end of the seq space, and a jump of 2^63 in a run
        // without history: each is a violation, never a panic or a walk over
        // every seq in the hole.
        let mut inp = input(2, &[]);
        inp.history = vec![None];
        let mut s = DeliveryStream::new(0);
        for seq in [1, 2, 1 << 63, u64::MAX, u64::MAX, 0] {
            s.record(seq, &mid(seq));
        }
        inp.sessions.push(SessionStreams {
            label: "x".into(),
            complete: true,
            rooms: vec![(0, s)],
        });
        let out = check(&inp);
        let parts: Vec<_> = out.violations.iter().map(|v| (v.kind, v.seqs)).collect();
        assert!(
            parts.contains(&(ViolationKind::Duplicate, (u64::MAX, u64::MAX))),
            "{parts:?}"
        );
        assert!(
            parts.contains(&(ViolationKind::Duplicate, (0, 0))),
            "{parts:?}"
        );
        assert!(
            parts.contains(&(ViolationKind::Gap, (3, (1 << 63) - 1))),
            "{parts:?}"
        );
        assert!(
            parts.contains(&(ViolationKind::Gap, ((1 << 63) + 1, u64::MAX - 1))),
            "{parts:?}"
        );
        // With history, the same stream is a phantom past its end.
        let mut inp = input(2, &[]);
        let mut s = DeliveryStream::new(0);
        for seq in [1, 2, u64::MAX] {
            s.record(seq, &mid(seq));
        }
        inp.sessions.push(SessionStreams {
            label: "x".into(),
            complete: true,
            rooms: vec![(0, s)],
        });
        assert_eq!(kinds(&check(&inp)), vec![ViolationKind::Phantom]);
    }

    /// History read again after late acks: a session that caught up to the
    /// first read's head owes nothing after it, but still everything before.
    #[test]
    fn holds_caught_up_sessions_to_their_target() {
        let mut inp = input(
            5,
            &[(&[1, 2, 3], true), (&[1, 2, 3, 4], true), (&[1, 2], true)],
        );
        assert_eq!(
            kinds(&check(&inp)),
            vec![
                ViolationKind::Lost,
                ViolationKind::Lost,
                ViolationKind::Lost
            ],
            "without a target every session owes up to the head"
        );
        inp.targets = vec![3];
        let out = check(&inp);
        let parts: Vec<_> = out
            .violations
            .iter()
            .map(|v| (v.kind, v.session.clone(), v.seqs))
            .collect();
        assert_eq!(
            parts,
            vec![(ViolationKind::Lost, Some("s2".to_string()), (3, 3))]
        );
        // Past the history's head is still a phantom, and wrong content is still caught.
        let mut inp = input(5, &[(&[1, 2, 3, 4, 5, 6], true)]);
        inp.targets = vec![3];
        assert_eq!(kinds(&check(&inp)), vec![ViolationKind::Phantom]);
        let mut inp = input(5, &[]);
        inp.targets = vec![3];
        let mut s = DeliveryStream::new(0);
        for seq in 1..=4 {
            let id = if seq == 4 {
                "forged".to_string()
            } else {
                mid(seq)
            };
            s.record(seq, &id);
        }
        inp.sessions.push(SessionStreams {
            label: "x".into(),
            complete: true,
            rooms: vec![(0, s)],
        });
        assert_eq!(kinds(&check(&inp)), vec![ViolationKind::ContentMismatch]);
    }

    #[test]
    fn catches_an_acked_message_missing_from_history() {
        let mut inp = input(3, &[(&[1, 2, 3], true)]);
        if let Some(Some(h)) = inp.history.get_mut(0) {
            h.pop();
        }
        let out = check(&inp);
        let k = kinds(&out);
        assert!(k.contains(&ViolationKind::AckedMissingFromHistory), "{k:?}");
    }

    #[test]
    fn catches_history_gaps_and_mismatches() {
        let mut inp = input(3, &[]);
        if let Some(Some(h)) = inp.history.get_mut(0) {
            h.remove(1);
            h[1].message_id = "other".into();
        }
        let k = kinds(&check(&inp));
        assert!(k.contains(&ViolationKind::HistoryGap), "{k:?}");
        assert!(k.contains(&ViolationKind::AckedMissingFromHistory), "{k:?}");
        assert!(k.contains(&ViolationKind::HistoryMismatch), "{k:?}");
    }

    #[test]
    fn catches_double_commits_and_seq_conflicts() {
        let mut inp = input(2, &[(&[1, 2], true)]);
        inp.acks.push(AckRecord {
            room: 0,
            seq: 2,
            client_msg_id: "c1".into(),
            message_id: mid(2),
        });
        let k = kinds(&check(&inp));
        assert!(k.contains(&ViolationKind::DoubleCommit), "{k:?}");
        assert!(k.contains(&ViolationKind::SeqConflict), "{k:?}");
        // A resend answered with the same seq is fine.
        let mut inp = input(2, &[(&[1, 2], true)]);
        inp.acks.push(inp.acks[0].clone());
        assert!(check(&inp).violations.is_empty());
    }

    #[test]
    fn catches_phantoms_and_wrong_content() {
        let out = check(&input(2, &[(&[1, 2, 3], true)]));
        assert_eq!(kinds(&out), vec![ViolationKind::Phantom]);
        let mut inp = input(2, &[]);
        let mut s = DeliveryStream::new(0);
        s.record(1, "m1");
        s.record(2, "not-m2");
        inp.sessions.push(SessionStreams {
            label: "x".into(),
            complete: true,
            rooms: vec![(0, s)],
        });
        assert_eq!(kinds(&check(&inp)), vec![ViolationKind::ContentMismatch]);
    }

    #[test]
    fn a_reconnect_with_sync_from_last_seen_is_fine_and_base_is_respected() {
        // Two connections' deliveries concatenated: 1..3 live, then 4..6 by
        // sync and live: contiguous, so no violation.
        let out = check(&input(6, &[(&[1, 2, 3, 4, 5, 6], true)]));
        assert!(out.violations.is_empty());
        // A session that joined at seq 2 owes only 3..
        let mut inp = input(4, &[]);
        let mut s = DeliveryStream::new(2);
        s.record(3, "m3");
        s.record(4, "m4");
        inp.sessions.push(SessionStreams {
            label: "late".into(),
            complete: true,
            rooms: vec![(0, s)],
        });
        assert!(check(&inp).violations.is_empty());
    }

    #[test]
    fn a_session_that_joined_at_the_head_and_saw_nothing_is_clean() {
        // Regression: the history fingerprint of an empty span used to
        // panic (`BTreeMap::range(5..=4)`) and crash the harness.
        let mut inp = input(4, &[(&[1, 2, 3, 4], true)]);
        inp.sessions.push(SessionStreams {
            label: "at-head".into(),
            complete: true,
            rooms: vec![(0, DeliveryStream::new(4))],
        });
        let out = check(&inp);
        assert!(out.violations.is_empty(), "{:?}", out.violations);
        // It still owes messages committed after its base.
        let mut inp = input(5, &[]);
        inp.sessions.push(SessionStreams {
            label: "late".into(),
            complete: true,
            rooms: vec![(0, DeliveryStream::new(4))],
        });
        assert_eq!(kinds(&check(&inp)), vec![ViolationKind::Lost]);
    }

    #[test]
    fn works_without_history() {
        let mut inp = input(3, &[(&[1, 2, 3], true), (&[1, 3], true)]);
        inp.history = vec![None];
        let out = check(&inp);
        assert_eq!(kinds(&out), vec![ViolationKind::Lost]);
    }

    #[test]
    fn streams_fold_into_few_spans() {
        let mut s = DeliveryStream::new(0);
        for seq in [1, 2, 5, 4, 3, 6] {
            s.record(seq, "x");
        }
        assert_eq!(s.spans, vec![(1, 6)]);
        assert_eq!(s.last_seen(), 6);
        assert_eq!(s.count, 6);
        assert_eq!(s.missing(8), vec![(7, 8)]);
    }
}
