//! Seq assignment and deduplication of one commit batch, as a pure
//! function of the head, the batch's client ids and the ids already stored.

use std::collections::HashMap;

use super::buckets::MAX_SEQ;
use crate::error::{StorageError, StorageResult};

/// What happens to one message of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Written with this new seq.
    New(u64),
    /// Its `client_msg_id` is already stored with this seq: a duplicate of
    /// an earlier batch.
    Stored(u64),
    /// Its `client_msg_id` appeared earlier in this batch, at this index
    /// (whose slot is `New` or `Stored`).
    Earlier(usize),
}

/// The plan of a commit at a given head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPlan {
    /// One slot per input message, in order.
    pub slots: Vec<Slot>,
    /// The head after the commit (the input head when nothing is new).
    pub new_head: u64,
}

impl CommitPlan {
    /// Number of new messages.
    pub fn new_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::New(_)))
            .count()
    }

    /// First new seq, if any message is new.
    pub fn first_new(&self) -> Option<u64> {
        self.slots.iter().find_map(|s| match s {
            Slot::New(seq) => Some(*seq),
            _ => None,
        })
    }

    /// The seqs of earlier batches this batch duplicates, ascending and
    /// without repeats.
    pub fn stored_seqs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::Stored(seq) => Some(*seq),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Plans a commit of messages with `client_ids` (in batch order) at head
/// `head`, given the ids already stored in the room (`stored`: id -> seq).
///
/// New messages get consecutive seqs from `head + 1` in batch order; a
/// repeated id (stored, or earlier in the batch) takes no seq. Fails only
/// if a seq would exceed the storable maximum.
pub fn plan(
    head: u64,
    client_ids: &[&str],
    stored: &HashMap<String, u64>,
) -> StorageResult<CommitPlan> {
    let mut first_index: HashMap<&str, usize> = HashMap::with_capacity(client_ids.len());
    let mut slots = Vec::with_capacity(client_ids.len());
    let mut next = head;
    for (i, id) in client_ids.iter().enumerate() {
        if let Some(&j) = first_index.get(id) {
            slots.push(Slot::Earlier(j));
            continue;
        }
        first_index.insert(id, i);
        if let Some(&seq) = stored.get(*id) {
            slots.push(Slot::Stored(seq));
            continue;
        }
        next = match next.checked_add(1) {
            Some(n) if n <= MAX_SEQ => n,
            _ => return Err(StorageError::Internal("room seq overflow".into())),
        };
        slots.push(Slot::New(next));
    }
    Ok(CommitPlan {
        slots,
        new_head: next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn fresh_batch_gets_consecutive_seqs() {
        let p = plan(7, &["a", "b", "c"], &HashMap::new()).expect("plan");
        assert_eq!(p.slots, vec![Slot::New(8), Slot::New(9), Slot::New(10)]);
        assert_eq!((p.new_head, p.first_new(), p.new_count()), (10, Some(8), 3));
        assert!(p.stored_seqs().is_empty());
    }

    #[test]
    fn duplicates_take_no_seq() {
        let p = plan(3, &["a", "x", "b", "a", "x", "c"], &stored(&[("x", 2)])).expect("plan");
        assert_eq!(
            p.slots,
            vec![
                Slot::New(4),
                Slot::Stored(2),
                Slot::New(5),
                Slot::Earlier(0),
                Slot::Earlier(1),
                Slot::New(6)
            ]
        );
        assert_eq!(p.new_head, 6);
        assert_eq!(p.stored_seqs(), vec![2]);
    }

    #[test]
    fn all_duplicates_and_empty_keep_the_head() {
        let p = plan(3, &["c", "a"], &stored(&[("a", 1), ("c", 3)])).expect("plan");
        assert_eq!(p.slots, vec![Slot::Stored(3), Slot::Stored(1)]);
        assert_eq!((p.new_head, p.first_new(), p.new_count()), (3, None, 0));
        assert_eq!(p.stored_seqs(), vec![1, 3]);
        let p = plan(0, &[], &HashMap::new()).expect("plan");
        assert!(p.slots.is_empty());
        assert_eq!(p.new_head, 0);
    }

    #[test]
    fn batches_crossing_a_bucket_edge_stay_consecutive() {
        let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let p = plan(16_379, &refs, &HashMap::new()).expect("plan");
        let seqs: Vec<u64> = p
            .slots
            .iter()
            .filter_map(|s| match s {
                Slot::New(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, (16_380..=16_389).collect::<Vec<_>>());
    }

    #[test]
    fn overflow_is_refused() {
        assert!(plan(MAX_SEQ, &["a"], &HashMap::new()).is_err());
        assert!(plan(MAX_SEQ - 1, &["a"], &HashMap::new()).is_ok());
        assert!(plan(MAX_SEQ, &["a"], &stored(&[("a", 5)])).is_ok());
    }
}
