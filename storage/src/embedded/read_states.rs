//! Read states: per user and room delivered/read watermarks.

use rusqlite::{Connection, OptionalExtension};

use super::sqlerr::map_err;
use crate::error::StorageResult;
use crate::model::Watermarks;

/// A user's watermarks in a room, zeros when none stored.
pub(crate) fn watermarks(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
) -> StorageResult<Watermarks> {
    let found = conn
        .prepare_cached(
            "SELECT delivered_seq, read_seq FROM read_states WHERE user_id = ?1 AND room_id = ?2",
        )
        .and_then(|mut st| {
            st.query_row([user_id, room_id], |r| {
                Ok(Watermarks {
                    delivered_seq: r.get(0)?,
                    read_seq: r.get(1)?,
                })
            })
            .optional()
        })
        .map_err(map_err)?;
    Ok(found.unwrap_or_default())
}

/// Every stored read state of a room, by user id. Rows of users who left
/// the room stay (they apply again if the user rejoins).
pub(crate) fn room_watermarks(
    conn: &Connection,
    room_id: &str,
) -> StorageResult<Vec<(String, Watermarks)>> {
    let mut st = conn
        .prepare_cached(
            "SELECT user_id, delivered_seq, read_seq FROM read_states
             WHERE room_id = ?1 ORDER BY user_id",
        )
        .map_err(map_err)?;
    let rows = st
        .query_map([room_id], |r| {
            Ok((
                r.get(0)?,
                Watermarks {
                    delivered_seq: r.get(1)?,
                    read_seq: r.get(2)?,
                },
            ))
        })
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

/// Raises both watermarks to at least the given values, never lowering
/// either. Values above `i64::MAX` are refused (`Internal`).
pub(crate) fn raise(
    conn: &Connection,
    user_id: &str,
    room_id: &str,
    marks: Watermarks,
) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO read_states (user_id, room_id, delivered_seq, read_seq)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, room_id) DO UPDATE SET
           delivered_seq = MAX(delivered_seq, excluded.delivered_seq),
           read_seq = MAX(read_seq, excluded.read_seq)",
    )
    .and_then(|mut st| st.execute((user_id, room_id, marks.delivered_seq, marks.read_seq)))
    .map_err(map_err)?;
    Ok(())
}
