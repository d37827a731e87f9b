//! Which replay a connection runs next.
//!
//! A connection replays history from storage for two reasons: the client
//! asked (`sync`), or its socket writer saw a room skip seqs (a gap repair).
//! One replay runs at a time, so two never interleave in a room. While one
//! runs, a client `sync` waits and goes first when it ends; the gaps found
//! meanwhile are merged (per room, from the lowest seq) and replayed
//! together after that. A second client `sync` while one runs or waits is
//! refused: the client has not had its answer yet.
//!
//! This is the bookkeeping only; the session actor runs what it is told to
//! start and reports back with [`ReplayQueue::finished`].

use std::collections::BTreeMap;

/// The rooms of a replay, each with the seq to replay after; `None` means
/// every room of the user.
pub type ReplayRooms = Option<BTreeMap<String, u64>>;

/// A replay the session should start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReplay {
    /// The client's `ref` to answer with `synced` (a `sync` only).
    pub r#ref: Option<String>,
    /// The rooms to replay.
    pub rooms: ReplayRooms,
    /// A gap repair (no `synced`, no errors to the client) rather than a `sync`.
    pub repair: bool,
}

/// A client `sync` refused because another one runs or waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncBusy;

/// What a running replay is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Running {
    /// The client's `sync`.
    Sync,
    /// Gaps the writer found.
    Repair,
}

/// What a connection has queued for replay, and what runs.
#[derive(Debug, Default)]
pub struct ReplayQueue {
    /// The running replay, if any.
    running: Option<Running>,
    /// The client's `sync` waiting for the running replay: (ref, rooms).
    sync: Option<(Option<String>, ReplayRooms)>,
    /// Gaps to replay after the running replay: room -> replay after this seq.
    repairs: BTreeMap<String, u64>,
}

impl ReplayQueue {
    /// The client asked for a `sync`. Refused while one of its syncs runs or
    /// waits; otherwise queued, and returned to start if nothing runs.
    pub fn sync(
        &mut self,
        r#ref: Option<String>,
        rooms: ReplayRooms,
    ) -> Result<Option<StartReplay>, SyncBusy> {
        if self.sync.is_some() || self.running == Some(Running::Sync) {
            return Err(SyncBusy);
        }
        self.sync = Some((r#ref, rooms));
        Ok(self.next())
    }

    /// The writer found `room` skipping seqs after `after`: queued (merged
    /// with an earlier gap of the room), and returned to start if nothing runs.
    pub fn repair(&mut self, room: &str, after: u64) -> Option<StartReplay> {
        let entry = self.repairs.entry(room.to_string()).or_insert(after);
        *entry = (*entry).min(after);
        self.next()
    }

    /// The running replay ended: the next one to start, if any.
    pub fn finished(&mut self) -> Option<StartReplay> {
        self.running = None;
        self.next()
    }

    /// Starts the client's `sync` first, then every queued gap in one replay.
    fn next(&mut self) -> Option<StartReplay> {
        if self.running.is_some() {
            return None;
        }
        let start = if let Some((r#ref, rooms)) = self.sync.take() {
            StartReplay {
                r#ref,
                rooms,
                repair: false,
            }
        } else if !self.repairs.is_empty() {
            StartReplay {
                r#ref: None,
                rooms: Some(std::mem::take(&mut self.repairs)),
                repair: true,
            }
        } else {
            return None;
        };
        self.running = Some(if start.repair {
            Running::Repair
        } else {
            Running::Sync
        });
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(list: &[(&str, u64)]) -> ReplayRooms {
        Some(list.iter().map(|(r, s)| (r.to_string(), *s)).collect())
    }

    fn sync_start(r: &str, list: &[(&str, u64)]) -> Option<StartReplay> {
        Some(StartReplay {
            r#ref: Some(r.into()),
            rooms: rooms(list),
            repair: false,
        })
    }

    fn repair_start(list: &[(&str, u64)]) -> Option<StartReplay> {
        Some(StartReplay {
            r#ref: None,
            rooms: rooms(list),
            repair: true,
        })
    }

    #[test]
    fn a_sync_on_an_idle_connection_starts_at_once() {
        let mut q = ReplayQueue::default();
        let started = q.sync(Some("s".into()), rooms(&[("r", 0)]));
        assert_eq!(started, Ok(sync_start("s", &[("r", 0)])));
        assert_eq!(q.finished(), None);
    }

    #[test]
    fn a_sync_during_a_repair_waits_and_then_goes_before_later_gaps() {
        let mut q = ReplayQueue::default();
        assert_eq!(q.repair("r", 4), repair_start(&[("r", 4)]));
        // The client's sync arrives while the repair runs: queued, not refused.
        assert_eq!(q.sync(Some("s".into()), rooms(&[("r", 0)])), Ok(None));
        // A second one while the first waits is refused.
        assert_eq!(q.sync(Some("t".into()), None), Err(SyncBusy));
        // More gaps while the repair runs wait too.
        assert_eq!(q.repair("q", 7), None);
        assert_eq!(q.repairs.len(), 1);
        // The repair ends: the client's sync runs next, then the gaps.
        assert_eq!(q.finished(), sync_start("s", &[("r", 0)]));
        assert_eq!(q.finished(), repair_start(&[("q", 7)]));
        assert_eq!(q.finished(), None);
    }

    #[test]
    fn a_second_sync_while_one_runs_is_refused_and_accepted_after_it() {
        let mut q = ReplayQueue::default();
        assert!(matches!(q.sync(Some("a".into()), None), Ok(Some(_))));
        assert_eq!(q.sync(Some("b".into()), None), Err(SyncBusy));
        assert_eq!(q.finished(), None);
        assert!(matches!(q.sync(Some("c".into()), None), Ok(Some(_))));
    }

    #[test]
    fn a_sync_is_not_refused_because_a_repair_runs_or_waits() {
        let mut q = ReplayQueue::default();
        assert!(q.sync(Some("a".into()), None).is_ok());
        // A gap found during the client's sync waits for it.
        assert_eq!(q.repair("r", 2), None);
        assert_eq!(q.finished(), repair_start(&[("r", 2)]));
        // During that repair a new client sync is accepted (queued).
        assert_eq!(q.sync(Some("b".into()), None), Ok(None));
    }

    #[test]
    fn gaps_of_one_room_merge_into_one_replay_from_the_lowest_seq() {
        let mut q = ReplayQueue::default();
        assert_eq!(q.repair("r", 9), repair_start(&[("r", 9)]));
        assert_eq!(q.repair("r", 12), None);
        assert_eq!(q.repair("r", 10), None);
        assert_eq!(q.repair("s", 3), None);
        assert_eq!(q.finished(), repair_start(&[("r", 10), ("s", 3)]));
        assert_eq!(q.finished(), None);
        assert_eq!(q.repairs.len(), 0);
    }
}
