//! Rooms, their members, users' room lists and direct-room pairs.

use rusqlite::{Connection, OptionalExtension};

use super::sqlerr::{map_err, map_unique};
use crate::error::{StorageError, StorageResult};
use crate::model::{MemberRecord, RoomRecord};

/// Inserts a room (with `last_seq` 0) and its members; `AlreadyExists` when
/// the id is taken. Runs inside the caller's transaction.
pub(crate) fn create_room(
    conn: &Connection,
    room: &RoomRecord,
    members: &[MemberRecord],
) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO rooms (room_id, kind, name, created_at, last_seq)
         VALUES (?1, ?2, ?3, ?4, 0)",
    )
    .and_then(|mut st| st.execute((&room.room_id, &room.kind, &room.name, room.created_at)))
    .map_err(map_unique)?;
    for m in members {
        put_member(conn, &room.room_id, m)?;
    }
    Ok(())
}

/// Returns the room holding `pair_key`, creating `room` for it (with
/// `members`) when there is none. `true` when this call created it.
pub(crate) fn create_direct_room(
    conn: &Connection,
    pair_key: &str,
    room: &RoomRecord,
    members: &[MemberRecord],
) -> StorageResult<(String, bool)> {
    let existing: Option<String> = conn
        .prepare_cached("SELECT room_id FROM direct_rooms WHERE pair_key = ?1")
        .and_then(|mut st| st.query_row([pair_key], |r| r.get(0)).optional())
        .map_err(map_err)?;
    if let Some(room_id) = existing {
        return Ok((room_id, false));
    }
    create_room(conn, room, members)?;
    conn.prepare_cached("INSERT INTO direct_rooms (pair_key, room_id) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute((pair_key, &room.room_id)))
        .map_err(map_unique)?;
    Ok((room.room_id.clone(), true))
}

/// Reads a room row.
pub(crate) fn room(conn: &Connection, room_id: &str) -> StorageResult<Option<RoomRecord>> {
    conn.prepare_cached(
        "SELECT room_id, kind, name, created_at, last_seq FROM rooms WHERE room_id = ?1",
    )
    .and_then(|mut st| {
        st.query_row([room_id], |r| {
            Ok(RoomRecord {
                room_id: r.get(0)?,
                kind: r.get(1)?,
                name: r.get(2)?,
                created_at: r.get(3)?,
                last_seq: r.get(4)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

/// Renames a room; `NotFound` when there is no such room.
pub(crate) fn rename_room(conn: &Connection, room_id: &str, name: &str) -> StorageResult<()> {
    let changed = conn
        .prepare_cached("UPDATE rooms SET name = ?2 WHERE room_id = ?1")
        .and_then(|mut st| st.execute((room_id, name)))
        .map_err(map_err)?;
    if changed == 0 {
        return Err(StorageError::NotFound);
    }
    Ok(())
}

/// All members of a room by join time, then user id.
pub(crate) fn members(conn: &Connection, room_id: &str) -> StorageResult<Vec<MemberRecord>> {
    let mut st = conn
        .prepare_cached(
            "SELECT user_id, username, role, joined_at FROM room_members
             WHERE room_id = ?1 ORDER BY joined_at, user_id",
        )
        .map_err(map_err)?;
    let rows = st.query_map([room_id], member_from_row).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
}

/// Ids of at most `limit` members of a room.
pub(crate) fn member_ids_up_to(
    conn: &Connection,
    room_id: &str,
    limit: usize,
) -> StorageResult<Vec<String>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut st = conn
        .prepare_cached("SELECT user_id FROM room_members WHERE room_id = ?1 LIMIT ?2")
        .map_err(map_err)?;
    let rows = st
        .query_map(rusqlite::params![room_id, limit], |row| row.get(0))
        .map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<String>>>()
        .map_err(map_err)
}

/// One member of a room.
pub(crate) fn member(
    conn: &Connection,
    room_id: &str,
    user_id: &str,
) -> StorageResult<Option<MemberRecord>> {
    conn.prepare_cached(
        "SELECT user_id, username, role, joined_at FROM room_members
         WHERE room_id = ?1 AND user_id = ?2",
    )
    .and_then(|mut st| st.query_row([room_id, user_id], member_from_row).optional())
    .map_err(map_err)
}

/// Adds a member or overwrites their row (name, role, join time), and makes
/// sure their user-rooms entry exists.
pub(crate) fn put_member(conn: &Connection, room_id: &str, m: &MemberRecord) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO room_members (room_id, user_id, username, role, joined_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (room_id, user_id) DO UPDATE
         SET username = excluded.username, role = excluded.role, joined_at = excluded.joined_at",
    )
    .and_then(|mut st| st.execute((room_id, &m.user_id, &m.username, &m.role, m.joined_at)))
    .map_err(map_err)?;
    conn.prepare_cached("INSERT OR IGNORE INTO user_rooms (user_id, room_id) VALUES (?1, ?2)")
        .and_then(|mut st| st.execute((&m.user_id, room_id)))
        .map_err(map_err)?;
    Ok(())
}

/// Removes a member and their user-rooms entry; nothing happens when absent.
pub(crate) fn remove_member(conn: &Connection, room_id: &str, user_id: &str) -> StorageResult<()> {
    conn.prepare_cached("DELETE FROM room_members WHERE room_id = ?1 AND user_id = ?2")
        .and_then(|mut st| st.execute((room_id, user_id)))
        .map_err(map_err)?;
    conn.prepare_cached("DELETE FROM user_rooms WHERE user_id = ?1 AND room_id = ?2")
        .and_then(|mut st| st.execute((user_id, room_id)))
        .map_err(map_err)?;
    Ok(())
}

/// Ids of a user's rooms, sorted.
pub(crate) fn user_rooms(conn: &Connection, user_id: &str) -> StorageResult<Vec<String>> {
    let mut st = conn
        .prepare_cached("SELECT room_id FROM user_rooms WHERE user_id = ?1 ORDER BY room_id")
        .map_err(map_err)?;
    let rows = st.query_map([user_id], |r| r.get(0)).map_err(map_err)?;
    rows.collect::<rusqlite::Result<Vec<String>>>()
        .map_err(map_err)
}

fn member_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MemberRecord> {
    Ok(MemberRecord {
        user_id: r.get(0)?,
        username: r.get(1)?,
        role: r.get(2)?,
        joined_at: r.get(3)?,
    })
}
