//! Message commits (the split-owner rule) and history reads.

use rusqlite::{Connection, OptionalExtension, Row};

use super::sqlerr::map_err;
use crate::error::{StorageError, StorageResult};
use crate::model::{CommitOutcome, HistoryRange, NewMessage, StoredMessage};

const MESSAGE_COLUMNS: &str =
    "room_id, seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id";

/// Commits a batch inside the caller's `BEGIN IMMEDIATE` transaction.
///
/// The head check and every insert happen under SQLite's write lock, so two
/// processes that both believe they own the room cannot both commit on the
/// same head: the second sees the moved head and gets `HeadMoved` (and the
/// caller rolls back). `messages` has `PRIMARY KEY (room_id, seq)`, so even a
/// wrong head could never overwrite a stored message.
pub(crate) fn commit(
    conn: &Connection,
    room_id: &str,
    expected_last_seq: u64,
    batch: &[NewMessage],
) -> StorageResult<Vec<CommitOutcome>> {
    let head: u64 = conn
        .prepare_cached("SELECT last_seq FROM rooms WHERE room_id = ?1")
        .and_then(|mut st| st.query_row([room_id], |r| r.get(0)).optional())
        .map_err(map_err)?
        .ok_or(StorageError::NotFound)?;
    if head != expected_last_seq {
        return Err(StorageError::HeadMoved {
            expected: expected_last_seq,
            actual: head,
        });
    }
    let mut next = head;
    let mut outcomes = Vec::with_capacity(batch.len());
    for m in batch {
        if let Some(existing) = by_client_msg_id(conn, room_id, &m.client_msg_id)? {
            outcomes.push(CommitOutcome::Duplicate(existing));
            continue;
        }
        next = next
            .checked_add(1)
            .ok_or_else(|| StorageError::Internal("room seq overflow".into()))?;
        let stored = StoredMessage {
            room_id: room_id.to_owned(),
            seq: next,
            message_id: m.message_id.clone(),
            sender_id: m.sender_id.clone(),
            sender_name: m.sender_name.clone(),
            body: m.body.clone(),
            sent_at: m.sent_at,
            client_msg_id: m.client_msg_id.clone(),
        };
        insert(conn, &stored)?;
        outcomes.push(CommitOutcome::Committed(stored));
    }
    if next != head {
        conn.prepare_cached("UPDATE rooms SET last_seq = ?2 WHERE room_id = ?1")
            .and_then(|mut st| st.execute((room_id, next)))
            .map_err(map_err)?;
    }
    Ok(outcomes)
}

/// Reads a slice of history, ascending by seq.
pub(crate) fn history(
    conn: &Connection,
    room_id: &str,
    range: HistoryRange,
) -> StorageResult<Vec<StoredMessage>> {
    // Bounds past i64::MAX cannot match stored seqs differently from
    // i64::MAX itself, so clamping keeps the meaning.
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    match range {
        HistoryRange::After {
            after_seq,
            before_seq,
            limit,
        } => {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let after = clamp(after_seq);
            match before_seq {
                Some(before) => query(
                    conn,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages
                         WHERE room_id = ?1 AND seq > ?2 AND seq < ?3 ORDER BY seq ASC LIMIT ?4"
                    ),
                    (room_id, after, clamp(before), limit),
                ),
                None => query(
                    conn,
                    &format!(
                        "SELECT {MESSAGE_COLUMNS} FROM messages
                         WHERE room_id = ?1 AND seq > ?2 ORDER BY seq ASC LIMIT ?3"
                    ),
                    (room_id, after, limit),
                ),
            }
        }
        HistoryRange::Before { before_seq, limit } => {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let mut page = query(
                conn,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages
                     WHERE room_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
                ),
                (room_id, clamp(before_seq), limit),
            )?;
            page.reverse();
            Ok(page)
        }
    }
}

/// The stored message a `client_msg_id` points at, if any.
fn by_client_msg_id(
    conn: &Connection,
    room_id: &str,
    client_msg_id: &str,
) -> StorageResult<Option<StoredMessage>> {
    let seq: Option<u64> = conn
        .prepare_cached("SELECT seq FROM client_msg_ids WHERE room_id = ?1 AND client_msg_id = ?2")
        .and_then(|mut st| {
            st.query_row([room_id, client_msg_id], |r| r.get(0))
                .optional()
        })
        .map_err(map_err)?;
    let Some(seq) = seq else {
        return Ok(None);
    };
    let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE room_id = ?1 AND seq = ?2");
    let msg = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row((room_id, seq), message_from_row).optional())
        .map_err(map_err)?;
    msg.map(Some).ok_or_else(|| {
        StorageError::Schema(format!(
            "client_msg_id points at missing message {room_id}/{seq}"
        ))
    })
}

/// Inserts a message and its idempotency key. A taken seq or key is an
/// internal error (the head check makes both impossible).
fn insert(conn: &Connection, m: &StoredMessage) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO messages
         (room_id, seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut st| {
        st.execute((
            &m.room_id,
            m.seq,
            &m.message_id,
            &m.sender_id,
            &m.sender_name,
            &m.body,
            m.sent_at,
            &m.client_msg_id,
        ))
    })
    .map_err(map_err)?;
    conn.prepare_cached(
        "INSERT INTO client_msg_ids (room_id, client_msg_id, seq) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut st| st.execute((&m.room_id, &m.client_msg_id, m.seq)))
    .map_err(map_err)?;
    Ok(())
}

fn query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> StorageResult<Vec<StoredMessage>> {
    let mut st = conn.prepare_cached(sql).map_err(map_err)?;
    let rows = st.query_map(params, message_from_row).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

fn message_from_row(r: &Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        room_id: r.get(0)?,
        seq: r.get(1)?,
        message_id: r.get(2)?,
        sender_id: r.get(3)?,
        sender_name: r.get(4)?,
        body: r.get(5)?,
        sent_at: r.get(6)?,
        client_msg_id: r.get(7)?,
    })
}
