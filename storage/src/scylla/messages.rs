//! Messages in CQL: the [`CommitIo`] operations of the group commit (whose
//! protocol is in [`commit`](super::commit)) and history reads.
//!
//! Writes: staging is one unlogged batch into the attempt's partition; the
//! claim is the LWT on `rooms`; copying into place is one unlogged,
//! single-partition batch per bucket plus one for `client_msg_ids`, all
//! sent concurrently (split only when a batch would exceed ~96 KiB). Reads
//! by key list use `IN` with at most [`IN_LIST_MAX`] keys per query.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use uuid::Uuid;

use super::binds;
use super::buckets::{bucket_of, HistoryCursor, Step};
use super::commit::{Claim, CommitIo};
use super::exec::{Executor, WriteBatch};
use super::rooms::{self, RoomHead};
use crate::error::{StorageError, StorageResult};
use crate::model::{HistoryRange, StoredMessage};

/// Most keys in one `IN` list (ScyllaDB refuses more than 100 clustering
/// key restrictions per query by default).
pub const IN_LIST_MAX: usize = 64;

/// A message row as read (the room id is known to the caller).
pub type MessageRow = (i64, String, String, String, String, i64, String);

/// A `client_msg_ids` row as read.
pub type ClientIdRow = (String, i64);

#[async_trait]
impl CommitIo for Executor {
    async fn head_serial(&self, room_id: &str) -> StorageResult<Option<RoomHead>> {
        rooms::head_serial(self, room_id).await
    }

    async fn staged(&self, room_id: &str, batch_id: Uuid) -> StorageResult<Vec<StoredMessage>> {
        let rows: Vec<MessageRow> = self.all(&binds::staged_get(room_id, batch_id)).await?;
        rows.into_iter()
            .map(|r| message_from_row(room_id, r))
            .collect()
    }

    async fn client_ids(&self, room_id: &str, ids: &[&str]) -> StorageResult<HashMap<String, u64>> {
        let mut unique: Vec<&str> = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let reads = unique.chunks(IN_LIST_MAX).map(|chunk| async move {
            self.all::<_, ClientIdRow>(&binds::client_ids_get(room_id, chunk.to_vec()))
                .await
        });
        let mut out = HashMap::new();
        for rows in try_join_all(reads).await? {
            for (id, seq) in rows {
                let seq = u64::try_from(seq).map_err(|_| {
                    StorageError::Schema(format!("negative seq {seq} in client_msg_ids"))
                })?;
                out.insert(id, seq);
            }
        }
        Ok(out)
    }

    async fn messages_by_seq(
        &self,
        room_id: &str,
        seqs: &[u64],
    ) -> StorageResult<HashMap<u64, StoredMessage>> {
        if seqs.is_empty() {
            return Ok(HashMap::new());
        }
        let mut groups: Vec<(i64, Vec<i64>)> = Vec::new();
        for &s in seqs {
            let b = bucket_of(s);
            let v = binds::seq_value(s)?;
            match groups.last_mut() {
                Some((lb, list)) if *lb == b && list.len() < IN_LIST_MAX => list.push(v),
                _ => groups.push((b, vec![v])),
            }
        }
        let reads = groups.into_iter().map(|(b, list)| async move {
            self.all::<_, MessageRow>(&binds::messages_by_seq(room_id, b, list))
                .await
        });
        let mut out = HashMap::new();
        for rows in try_join_all(reads).await? {
            for r in rows {
                let m = message_from_row(room_id, r)?;
                out.insert(m.seq, m);
            }
        }
        Ok(out)
    }

    async fn stage(&self, batch_id: Uuid, msgs: &[StoredMessage]) -> StorageResult<()> {
        let mut wb = WriteBatch::unlogged();
        for m in msgs {
            wb.push(binds::staged_insert(batch_id, m)?, message_bytes(m))?;
        }
        self.write_batch(wb).await
    }

    async fn claim(
        &self,
        room_id: &str,
        expected: u64,
        new_head: u64,
        batch_id: Uuid,
        first_seq: u64,
    ) -> StorageResult<Claim> {
        let res = self
            .lwt(&binds::room_claim(
                room_id, expected, new_head, batch_id, first_seq,
            )?)
            .await?;
        if res.applied {
            return Ok(Claim::Applied);
        }
        Ok(match res.bigint("last_seq") {
            Some(actual) => Claim::Moved(u64::try_from(actual).unwrap_or(0)),
            None => Claim::Missing,
        })
    }

    async fn put_messages(&self, msgs: &[StoredMessage]) -> StorageResult<()> {
        let mut by_bucket: Vec<(i64, WriteBatch<'_>)> = Vec::new();
        for m in msgs {
            let b = bucket_of(m.seq);
            if by_bucket.last().map(|(lb, _)| *lb) != Some(b) {
                by_bucket.push((b, WriteBatch::unlogged()));
            }
            if let Some((_, wb)) = by_bucket.last_mut() {
                wb.push(binds::message_insert(m)?, message_bytes(m))?;
            }
        }
        try_join_all(by_bucket.into_iter().map(|(_, wb)| self.write_batch(wb))).await?;
        Ok(())
    }

    async fn put_client_ids(&self, msgs: &[StoredMessage]) -> StorageResult<()> {
        let mut ids = WriteBatch::unlogged();
        for m in msgs {
            ids.push(binds::client_id_insert(m)?, 32 + m.client_msg_id.len())?;
        }
        self.write_batch(ids).await
    }
}

/// Reads a slice of history, ascending, walking buckets as planned by
/// [`HistoryCursor`].
pub async fn history(
    x: &Executor,
    room_id: &str,
    range: HistoryRange,
) -> StorageResult<Vec<StoredMessage>> {
    let mut cursor = HistoryCursor::new(range);
    let mut out: Vec<StoredMessage> = Vec::new();
    loop {
        match cursor.next_step() {
            Step::Done => break,
            Step::NeedHead => {
                let head = rooms::room(x, room_id).await?.map_or(0, |r| r.last_seq);
                cursor.on_head(head);
            }
            Step::Read(r) => {
                let limit = i32::try_from(r.limit).unwrap_or(i32::MAX);
                let rows: Vec<MessageRow> = x
                    .all(&binds::messages_range(
                        room_id,
                        r.bucket,
                        binds::seq_value(r.lo)?,
                        binds::seq_value(r.hi)?,
                        limit,
                        r.descending,
                    ))
                    .await?;
                let msgs = rows
                    .into_iter()
                    .map(|row| message_from_row(room_id, row))
                    .collect::<StorageResult<Vec<_>>>()?;
                let seqs: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
                cursor.on_rows(&r, &seqs);
                out.extend(msgs);
            }
        }
    }
    if cursor.descending() {
        out.reverse();
    }
    Ok(out)
}

fn message_bytes(m: &StoredMessage) -> usize {
    64 + m.room_id.len()
        + m.message_id.len()
        + m.sender_id.len()
        + m.sender_name.len()
        + m.body.len()
        + m.client_msg_id.len()
}

fn message_from_row(room_id: &str, row: MessageRow) -> StorageResult<StoredMessage> {
    let (seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id) = row;
    let seq = u64::try_from(seq)
        .map_err(|_| StorageError::Schema(format!("negative seq {seq} in {room_id}")))?;
    Ok(StoredMessage {
        room_id: room_id.to_owned(),
        seq,
        message_id,
        sender_id,
        sender_name,
        body,
        sent_at,
        client_msg_id,
    })
}
