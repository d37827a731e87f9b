//! The group commit and the split-owner rule.
//!
//! The protocol is written once, generically over [`CommitIo`] (the
//! storage operations it needs): [`messages`](super::messages) implements
//! them with CQL, and the offline tests run the very same code against an
//! in-memory model with injected failures and racing owners.
//!
//! The room's head (`rooms.last_seq`) is the single source of truth for
//! which seqs exist. A commit at expected head `h`:
//!
//! 1. **Know the head.** Unless this store itself produced head `h` and
//!    finished writing that batch (a small in-memory cache), read the room
//!    linearizably (a Paxos read). An unknown room is `NotFound`; another
//!    head is `HeadMoved` (nothing written). If the row names a claimed
//!    batch, copy it into place again from its staging partition (it may
//!    be the batch of a committer that died after claiming): after this,
//!    every batch up to `h` is in `messages` and `client_msg_ids`.
//! 2. **Deduplicate.** Look the batch's `client_msg_id`s up in
//!    `client_msg_ids` (chunked `IN` queries) and plan: repeated ids take no
//!    seq; new messages get `h+1, h+2, ...`.
//! 3. **Stage.** Write the new messages, with their seqs, into
//!    `message_batches` under a fresh `batch_id` (one partition, plain
//!    writes). Nothing reads this partition unless step 4 succeeds.
//! 4. **Claim.** `UPDATE rooms SET last_seq = h+k, pending_batch = ?,
//!    pending_from = h+1 WHERE room_id = ? IF last_seq = h`. This one
//!    Paxos round is the commit point: of two owners committing on `h`,
//!    exactly one applies; the other gets the new head back and answers
//!    `HeadMoved` with nothing visible (its staged rows are never read and
//!    expire).
//! 5. **Copy into place.** Write the messages into their `(room, bucket)`
//!    partitions (one unlogged single-partition batch per bucket, split
//!    only by size, concurrently), and only once they are all there, their
//!    ids into `client_msg_ids`: an id anyone can read always points at a
//!    stored message. Only then does the call return and the room ack the
//!    senders.
//!
//! Why this order: seqs are handed out only by the claim, so no two
//! batches ever write the same seq and an acked message is never
//! overwritten; the ids of every batch up to the head are in
//! `client_msg_ids` or in the claimed (pending) batch, which step 1 copies
//! into place before deduplicating, so a retried message is always found
//! and never gets a second seq; and a claimed batch's content is durable
//! before the claim, so a committer dying between steps 4 and 5 loses
//! nothing (the batch was never acked; the next commit in the room copies
//! it into place, and the senders' retries find it as duplicates).
//!
//! A claimed batch whose staging rows cannot all be read is copied only
//! when the missing seqs are already in place (the usual case: a batch
//! copied long ago whose staging rows have expired); otherwise the commit
//! is `Unavailable` and retried, unless the staging rows have expired
//! for good (see [`roll_forward`]).
//!
//! If the claim times out its outcome is unknown; the error goes back to
//! the room (which answers `unavailable`; clients resend with the same
//! `client_msg_id`), the cache forgets the room, and the next commit
//! re-reads the head: if the claim did apply, the batch is copied into
//! place and the resends are duplicates.
//!
//! Cost per commit in steady state (same owner, head cached): one
//! single-partition read for the ids, one write for staging, one LWT (in
//! ScyllaDB, prepare+read, accept, learn: three replica round trips), and
//! one round of concurrent batch writes. After an ownership change, one
//! Paxos read and one re-copy of the last batch once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;

use super::commit_plan::{self, Slot};
use super::heads::HeadCache;
use super::rooms::RoomHead;
use crate::error::{StorageError, StorageResult};
use crate::model::{CommitOutcome, NewMessage, StoredMessage};

/// What a head claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The head was the expected one and now is the new head.
    Applied,
    /// The head was another: this one.
    Moved(u64),
    /// No such room.
    Missing,
}

/// The storage operations of a commit.
#[async_trait]
pub trait CommitIo: Send + Sync {
    /// The room's head, read linearizably; `None` for an unknown room.
    async fn head_serial(&self, room_id: &str) -> StorageResult<Option<RoomHead>>;
    /// The staged messages of a commit attempt.
    async fn staged(&self, room_id: &str, batch_id: Uuid) -> StorageResult<Vec<StoredMessage>>;
    /// Stored seqs of the given client ids (absent ids are left out).
    async fn client_ids(&self, room_id: &str, ids: &[&str]) -> StorageResult<HashMap<String, u64>>;
    /// Stored messages by seq (absent seqs are left out).
    async fn messages_by_seq(
        &self,
        room_id: &str,
        seqs: &[u64],
    ) -> StorageResult<HashMap<u64, StoredMessage>>;
    /// Stages messages under a commit attempt.
    async fn stage(&self, batch_id: Uuid, msgs: &[StoredMessage]) -> StorageResult<()>;
    /// The conditional head update.
    async fn claim(
        &self,
        room_id: &str,
        expected: u64,
        new_head: u64,
        batch_id: Uuid,
        first_seq: u64,
    ) -> StorageResult<Claim>;
    /// Writes messages into their history partitions (idempotent).
    async fn put_messages(&self, msgs: &[StoredMessage]) -> StorageResult<()>;
    /// Writes the messages' client ids (idempotent); only ever called once
    /// the messages themselves are in place.
    async fn put_client_ids(&self, msgs: &[StoredMessage]) -> StorageResult<()>;
}

/// How long staging rows live (`message_batches`' `default_time_to_live`).
pub const STAGING_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Copies messages into place: first the messages, then their ids.
async fn materialize<I: CommitIo>(io: &I, msgs: &[StoredMessage]) -> StorageResult<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    io.put_messages(msgs).await?;
    io.put_client_ids(msgs).await
}

/// Commits a batch; see the module documentation. On any error the room's
/// cached head is forgotten, so the next commit reads the head again.
pub async fn commit<I: CommitIo>(
    io: &I,
    heads: &HeadCache,
    room_id: &str,
    expected: u64,
    batch: &[NewMessage],
) -> StorageResult<Vec<CommitOutcome>> {
    let result = commit_at(io, heads, room_id, expected, batch).await;
    if result.is_err() {
        heads.forget(room_id);
    }
    result
}

async fn commit_at<I: CommitIo>(
    io: &I,
    heads: &HeadCache,
    room_id: &str,
    expected: u64,
    batch: &[NewMessage],
) -> StorageResult<Vec<CommitOutcome>> {
    let cached = heads.is_known(room_id, expected);
    if !cached {
        let head = io
            .head_serial(room_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        if head.last_seq != expected {
            heads.forget(room_id);
            return Err(StorageError::HeadMoved {
                expected,
                actual: head.last_seq,
            });
        }
        roll_forward(io, room_id, &head).await?;
        heads.remember(room_id, expected);
    }

    let ids: Vec<&str> = batch.iter().map(|m| m.client_msg_id.as_str()).collect();
    let stored_ids = io.client_ids(room_id, &ids).await?;
    if let Some(&above) = stored_ids.values().filter(|s| **s > expected).max() {
        // Another owner committed one of these after `expected`: the head
        // has moved, whether or not this batch has anything new.
        let head = io
            .head_serial(room_id)
            .await?
            .ok_or(StorageError::NotFound)?;
        return Err(StorageError::HeadMoved {
            expected,
            actual: head.last_seq.max(above),
        });
    }
    let plan = commit_plan::plan(expected, &ids, &stored_ids)?;
    let wanted = plan.stored_seqs();
    let earlier = io.messages_by_seq(room_id, &wanted).await?;
    if let Some(seq) = wanted.iter().find(|s| !earlier.contains_key(s)) {
        // Ids are written only after their messages; a replica that has
        // the id but not yet the message is behind. Try again later.
        return Err(StorageError::Unavailable(format!(
            "client_msg_id of {room_id} points at message {seq}, not readable yet"
        )));
    }

    let mut fresh = Vec::with_capacity(plan.new_count());
    for (m, slot) in batch.iter().zip(&plan.slots) {
        if let Slot::New(seq) = slot {
            fresh.push(stored(room_id, *seq, m));
        }
    }
    let outcomes = outcomes(&plan.slots, &fresh, &earlier)?;

    let Some(first) = plan.first_new() else {
        // Nothing new: the head must still be the expected one, which only
        // a linearizable read can tell (step 1 did one unless cached).
        if cached {
            let head = io
                .head_serial(room_id)
                .await?
                .ok_or(StorageError::NotFound)?;
            if head.last_seq != expected {
                heads.forget(room_id);
                return Err(StorageError::HeadMoved {
                    expected,
                    actual: head.last_seq,
                });
            }
        }
        return Ok(outcomes);
    };

    let batch_id = Uuid::now_v7();
    io.stage(batch_id, &fresh).await?;

    heads.forget(room_id);
    match io
        .claim(room_id, expected, plan.new_head, batch_id, first)
        .await?
    {
        Claim::Applied => {}
        Claim::Moved(actual) if actual == plan.new_head => {
            // A coordinator that retried its Paxos round (or whose proposal
            // another round finished) can report this very claim as a
            // conflict: the head it shows is the one this batch asked for.
            // The row says whose batch it is.
            let head = io
                .head_serial(room_id)
                .await?
                .ok_or(StorageError::NotFound)?;
            if head.last_seq != plan.new_head || head.pending != Some((batch_id, first)) {
                return Err(StorageError::HeadMoved {
                    expected,
                    actual: head.last_seq,
                });
            }
        }
        Claim::Moved(actual) => return Err(StorageError::HeadMoved { expected, actual }),
        Claim::Missing => return Err(StorageError::NotFound),
    }

    materialize(io, &fresh).await.map_err(|e| {
        StorageError::Unavailable(format!(
            "batch claimed at seqs {first}..={} but not yet copied into place \
             (the next commit in the room completes it): {e}",
            plan.new_head
        ))
    })?;
    heads.remember(room_id, plan.new_head);
    Ok(outcomes)
}

/// Reads the room's head linearizably and copies its last claimed batch
/// into place (see [`roll_forward`]); afterwards history holds every seq up
/// to that head, and the head is cached. Nothing to do for an unknown room.
pub async fn settle<I: CommitIo>(io: &I, heads: &HeadCache, room_id: &str) -> StorageResult<()> {
    let Some(head) = io.head_serial(room_id).await? else {
        return Ok(());
    };
    if let Err(e) = roll_forward(io, room_id, &head).await {
        heads.forget(room_id);
        return Err(e);
    }
    heads.remember(room_id, head.last_seq);
    Ok(())
}

/// Copies the room's last claimed batch into place from its staging
/// partition (idempotent upserts of the same content).
///
/// Staging rows that cannot be read are fine when their messages are
/// already in place (a batch copied long ago, whose staging rows have
/// expired). Otherwise they may only be behind on this replica (another
/// datacenter's write not here yet): `Unavailable`, try again. Only when
/// the staging rows have expired for good (the committer died before the
/// copy and nothing was committed in the room for [`STAGING_TTL`]) is what
/// is left copied anyway: those messages were never acknowledged, and the
/// room must go on.
async fn roll_forward<I: CommitIo>(io: &I, room_id: &str, head: &RoomHead) -> StorageResult<()> {
    let Some((batch_id, from)) = head.pending else {
        return Ok(());
    };
    let msgs = io.staged(room_id, batch_id).await?;
    let staged: HashSet<u64> = msgs.iter().map(|m| m.seq).collect();
    let unstaged: Vec<u64> = (from..=head.last_seq)
        .filter(|s| !staged.contains(s))
        .collect();
    if !unstaged.is_empty() {
        let in_place = io.messages_by_seq(room_id, &unstaged).await?;
        let lost: Vec<u64> = unstaged
            .into_iter()
            .filter(|s| !in_place.contains_key(s))
            .collect();
        if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
            if !staging_expired(batch_id, SystemTime::now()) {
                return Err(StorageError::Unavailable(format!(
                    "claimed batch {batch_id} of {room_id}: seqs {first}..={last} \
                     neither staged nor in place on the replicas read"
                )));
            }
            tracing::error!(room = %room_id, %batch_id, first, last, count = lost.len(),
                "claimed batch lost: its staging rows expired before it was copied \
                 into place; these seqs (never acknowledged) stay empty");
        }
    }
    materialize(io, &msgs).await
}

/// Whether the staging rows of `batch_id` (a v7 UUID, made when the batch
/// was staged) have expired by `now`. An id without a time counts as
/// expired: nothing better can be learnt from it.
pub fn staging_expired(batch_id: Uuid, now: SystemTime) -> bool {
    let Some(ts) = batch_id.get_timestamp() else {
        return true;
    };
    let (secs, _) = ts.to_unix();
    let staged_at = UNIX_EPOCH + Duration::from_secs(secs);
    now.duration_since(staged_at)
        .is_ok_and(|age| age >= STAGING_TTL)
}

/// The outcomes of a plan, given the new messages (in seq order) and the
/// earlier ones it duplicates.
pub fn outcomes(
    slots: &[Slot],
    fresh: &[StoredMessage],
    earlier: &HashMap<u64, StoredMessage>,
) -> StorageResult<Vec<CommitOutcome>> {
    let missing = |what: String| StorageError::Internal(format!("commit plan: {what}"));
    let mut out: Vec<CommitOutcome> = Vec::with_capacity(slots.len());
    let mut fresh_iter = fresh.iter();
    for slot in slots {
        let o = match slot {
            Slot::New(seq) => {
                let m = fresh_iter
                    .next()
                    .filter(|m| m.seq == *seq)
                    .ok_or_else(|| missing(format!("no new message for seq {seq}")))?;
                CommitOutcome::Committed(m.clone())
            }
            Slot::Stored(seq) => CommitOutcome::Duplicate(
                earlier
                    .get(seq)
                    .cloned()
                    .ok_or_else(|| missing(format!("no stored message {seq}")))?,
            ),
            Slot::Earlier(i) => CommitOutcome::Duplicate(
                out.get(*i)
                    .map(|o| o.message().clone())
                    .ok_or_else(|| missing(format!("no earlier slot {i}")))?,
            ),
        };
        out.push(o);
    }
    Ok(out)
}

fn stored(room_id: &str, seq: u64, m: &NewMessage) -> StoredMessage {
    StoredMessage {
        room_id: room_id.to_owned(),
        seq,
        message_id: m.message_id.clone(),
        sender_id: m.sender_id.clone(),
        sender_name: m.sender_name.clone(),
        body: m.body.clone(),
        sent_at: m.sent_at,
        client_msg_id: m.client_msg_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scylla::commit_plan::plan;

    fn new(cid: &str) -> NewMessage {
        NewMessage {
            message_id: format!("id-{cid}"),
            sender_id: "s".into(),
            sender_name: "S".into(),
            body: format!("body {cid}"),
            sent_at: 1,
            client_msg_id: cid.into(),
        }
    }

    #[test]
    fn outcomes_follow_the_plan() {
        let batch = [new("a"), new("x"), new("b"), new("a")];
        let ids: Vec<&str> = batch.iter().map(|m| m.client_msg_id.as_str()).collect();
        let known: HashMap<String, u64> = [("x".to_string(), 2u64)].into_iter().collect();
        let p = plan(5, &ids, &known).expect("plan");
        let fresh = vec![stored("r", 6, &batch[0]), stored("r", 7, &batch[2])];
        let x_msg = stored("r", 2, &new("x"));
        let earlier: HashMap<u64, StoredMessage> = [(2, x_msg.clone())].into_iter().collect();
        let got = outcomes(&p.slots, &fresh, &earlier).expect("outcomes");
        assert_eq!(
            got,
            vec![
                CommitOutcome::Committed(fresh[0].clone()),
                CommitOutcome::Duplicate(x_msg),
                CommitOutcome::Committed(fresh[1].clone()),
                CommitOutcome::Duplicate(fresh[0].clone()),
            ]
        );
        assert!(outcomes(&p.slots, &fresh[..1], &earlier).is_err());
        assert!(outcomes(&p.slots, &fresh, &HashMap::new()).is_err());
    }
}
