//! Rooms, members (both directions) and direct-room pairs.
//!
//! Every write to `rooms` is a lightweight transaction (create
//! `IF NOT EXISTS`, rename `IF EXISTS`, the head claim `IF last_seq = ?`),
//! so they are all ordered by Paxos. A member row and its user-rooms entry
//! live in two partitions and are written together in a logged batch: the
//! batchlog makes sure both land even if the coordinator dies (membership
//! changes are rare, so its extra write is cheap).

use uuid::Uuid;

use super::binds;
use super::exec::{Executor, WriteBatch};
use crate::error::{StorageError, StorageResult};
use crate::model::{MemberRecord, RoomRecord};

/// A `rooms` row as read.
pub type RoomRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<Uuid>,
    Option<i64>,
);

/// The commit-relevant part of a room row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomHead {
    /// The head (highest claimed seq).
    pub last_seq: u64,
    /// The last claimed batch and its first seq (its last is `last_seq`).
    pub pending: Option<(Uuid, u64)>,
}

/// Splits a row into the record and its head.
pub fn room_from_row(row: RoomRow) -> StorageResult<(RoomRecord, RoomHead)> {
    let (room_id, kind, name, created_at, last_seq, pending_batch, pending_from) = row;
    let to_seq = |v: i64| {
        u64::try_from(v)
            .map_err(|_| StorageError::Schema(format!("room {room_id} has a negative seq {v}")))
    };
    let last_seq = to_seq(last_seq.unwrap_or(0))?;
    let pending = match (pending_batch, pending_from) {
        (Some(b), Some(f)) => Some((b, to_seq(f)?)),
        _ => None,
    };
    Ok((
        RoomRecord {
            room_id: room_id.clone(),
            kind: kind.unwrap_or_default(),
            name: name.unwrap_or_default(),
            created_at: created_at.unwrap_or(0),
            last_seq,
        },
        RoomHead { last_seq, pending },
    ))
}

/// Creates a room (head 0) and its members; `AlreadyExists` if the id is
/// taken. The room row is claimed first, so members are never written into
/// somebody else's room.
pub async fn create_room(
    x: &Executor,
    room: &RoomRecord,
    members: &[MemberRecord],
) -> StorageResult<()> {
    let res = x.lwt(&binds::room_insert(room)).await?;
    if !res.applied {
        return Err(StorageError::AlreadyExists);
    }
    put_members(x, &room.room_id, members).await
}

/// Returns the room of a pair, creating `room` for it when there is none.
///
/// The pair is claimed first (`IF NOT EXISTS`); only the winner creates
/// its room. A caller that finds the pair taken but its room missing (the
/// winner is still writing it, or died) completes the room under the
/// winner's id with the same pair's members, so a pair can never end up
/// pointing at nothing.
pub async fn create_direct_room(
    x: &Executor,
    pair_key: &str,
    room: &RoomRecord,
    members: &[MemberRecord],
) -> StorageResult<(String, bool)> {
    let existing: Option<DirectRow> = x.one(&binds::direct_get(pair_key)).await?;
    if let Some((Some(id),)) = existing {
        complete_direct_room(x, &id, room, members).await?;
        return Ok((id, false));
    }
    let claim = x.lwt(&binds::direct_claim(pair_key, &room.room_id)).await?;
    if claim.applied {
        let res = x.lwt(&binds::room_insert(room)).await?;
        if !res.applied {
            // Only a caller completing this pair's room can have created
            // it: the id is ours and fresh.
            tracing::debug!(room = %room.room_id, "direct room completed by a concurrent caller");
        }
        put_members(x, &room.room_id, members).await?;
        return Ok((room.room_id.clone(), true));
    }
    let id = claim
        .text("room_id")
        .ok_or_else(|| StorageError::Internal("direct room claim returned no room_id".into()))?
        .to_owned();
    complete_direct_room(x, &id, room, members).await?;
    Ok((id, false))
}

/// Makes sure the direct room `id` exists, creating it from `template`'s
/// fields (and `members`) if its creator has not yet.
async fn complete_direct_room(
    x: &Executor,
    id: &str,
    template: &RoomRecord,
    members: &[MemberRecord],
) -> StorageResult<()> {
    if room(x, id).await?.is_some() {
        return Ok(());
    }
    let r = RoomRecord {
        room_id: id.to_owned(),
        ..template.clone()
    };
    let res = x.lwt(&binds::room_insert(&r)).await?;
    if res.applied {
        tracing::info!(room = %id, "completed a direct room whose creator had not written it");
        put_members(x, id, members).await?;
    }
    Ok(())
}

/// Reads a room row.
pub async fn room(x: &Executor, room_id: &str) -> StorageResult<Option<RoomRecord>> {
    let row: Option<RoomRow> = x.one(&binds::room_get(room_id)).await?;
    row.map(|r| room_from_row(r).map(|(rec, _)| rec))
        .transpose()
}

/// Reads a room's head linearizably (a Paxos read): it reflects every head
/// claim that finished before the call. `None` for an unknown room.
pub async fn head_serial(x: &Executor, room_id: &str) -> StorageResult<Option<RoomHead>> {
    let row: Option<RoomRow> = x.one(&binds::room_get_serial(room_id)).await?;
    row.map(|r| room_from_row(r).map(|(_, head)| head))
        .transpose()
}

/// Renames a room; `NotFound` when there is none.
pub async fn rename_room(x: &Executor, room_id: &str, name: &str) -> StorageResult<()> {
    let res = x.lwt(&binds::room_rename(room_id, name)).await?;
    if res.applied {
        Ok(())
    } else {
        Err(StorageError::NotFound)
    }
}

/// All members, by join time then user id.
pub async fn members(x: &Executor, room_id: &str) -> StorageResult<Vec<MemberRecord>> {
    let rows: Vec<MemberRow> = x.all(&binds::members_of_room(room_id)).await?;
    let mut out: Vec<MemberRecord> = rows.into_iter().map(member_from_row).collect();
    out.sort_by(|a, b| (a.joined_at, &a.user_id).cmp(&(b.joined_at, &b.user_id)));
    Ok(out)
}

/// Ids of at most `limit` members (an empty answer for a limit of 0: CQL
/// wants a positive one).
pub async fn member_ids_up_to(
    x: &Executor,
    room_id: &str,
    limit: usize,
) -> StorageResult<Vec<String>> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i32::try_from(limit).unwrap_or(i32::MAX);
    let rows: Vec<MemberIdRow> = x.all(&binds::member_ids_of_room(room_id, limit)).await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One member.
pub async fn member(
    x: &Executor,
    room_id: &str,
    user_id: &str,
) -> StorageResult<Option<MemberRecord>> {
    let row: Option<MemberRow> = x.one(&binds::member_get(room_id, user_id)).await?;
    Ok(row.map(member_from_row))
}

/// Adds or updates a member and their user-rooms entry.
pub async fn put_member(x: &Executor, room_id: &str, m: &MemberRecord) -> StorageResult<()> {
    put_members(x, room_id, std::slice::from_ref(m)).await
}

/// Removes a member and their user-rooms entry (no error when absent).
pub async fn remove_member(x: &Executor, room_id: &str, user_id: &str) -> StorageResult<()> {
    let mut b = WriteBatch::logged();
    b.push(binds::member_delete(room_id, user_id), 64)?;
    b.push(binds::user_room_delete(user_id, room_id), 64)?;
    x.write_batch(b).await
}

/// A user's room ids, ascending.
pub async fn user_rooms(x: &Executor, user_id: &str) -> StorageResult<Vec<String>> {
    let rows: Vec<UserRoomRow> = x.all(&binds::user_rooms_of_user(user_id)).await?;
    Ok(rows.into_iter().map(|(r,)| r).collect())
}

async fn put_members(x: &Executor, room_id: &str, members: &[MemberRecord]) -> StorageResult<()> {
    let mut b = WriteBatch::logged();
    for m in members {
        let size = 64 + m.user_id.len() + m.username.len() + m.role.len();
        b.push(binds::member_put(room_id, m), size)?;
        b.push(binds::user_room_put(&m.user_id, room_id), 64)?;
    }
    x.write_batch(b).await
}

/// A `room_members` row as read.
pub type MemberRow = (String, Option<String>, Option<String>, Option<i64>);

/// A `user_rooms` row as read.
pub type UserRoomRow = (String,);

/// A member id read from `room_members`.
pub type MemberIdRow = (String,);

/// A `direct_rooms` row as read.
pub type DirectRow = (Option<String>,);

fn member_from_row(row: MemberRow) -> MemberRecord {
    let (user_id, username, role, joined_at) = row;
    MemberRecord {
        user_id,
        username: username.unwrap_or_default(),
        role: role.unwrap_or_default(),
        joined_at: joined_at.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_rows_split_into_record_and_head() {
        let batch = Uuid::now_v7();
        let (rec, head) = room_from_row((
            "r".into(),
            Some("group".into()),
            Some("n".into()),
            Some(5),
            Some(40),
            Some(batch),
            Some(38),
        ))
        .expect("valid row");
        assert_eq!(rec.last_seq, 40);
        assert_eq!(rec.kind, "group");
        assert_eq!(
            head,
            RoomHead {
                last_seq: 40,
                pending: Some((batch, 38))
            }
        );
        let (_, fresh) =
            room_from_row(("r".into(), None, None, None, Some(0), None, None)).expect("fresh row");
        assert_eq!(
            fresh,
            RoomHead {
                last_seq: 0,
                pending: None
            }
        );
        assert!(room_from_row(("r".into(), None, None, None, Some(-1), None, None)).is_err());
    }
}
