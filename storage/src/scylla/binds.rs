//! Bound values: for each [`Stmt`], the one function that builds its values.
//!
//! A [`Bound`] pairs a statement with a tuple of values, so the choice of
//! statement and the order and number of its values live in one place.
//! The executor refuses a `Bound` whose tuple arity differs from the
//! statement's marker count, and the offline tests call every binder and
//! compare the two, so a mismatch cannot reach a server.

use scylla::value::MaybeUnset;
use uuid::Uuid;

use super::statements::Stmt;
use crate::error::{StorageError, StorageResult};
use crate::model::{MemberRecord, RefreshTokenRecord, RoomRecord, StoredMessage, UserRecord};

/// A statement with the values for its bind markers.
#[derive(Debug, Clone)]
pub struct Bound<V> {
    /// The statement.
    pub stmt: Stmt,
    /// Its values, in marker order.
    pub values: V,
}

/// Number of values in a tuple (the number of markers it can fill).
pub trait Arity {
    /// The count.
    const ARITY: usize;
}

macro_rules! arity {
    ($n:expr; $($t:ident),*) => {
        impl<$($t),*> Arity for ($($t,)*) {
            const ARITY: usize = $n;
        }
    };
}
arity!(1; A);
arity!(2; A, B);
arity!(3; A, B, C);
arity!(4; A, B, C, D);
arity!(5; A, B, C, D, E);
arity!(6; A, B, C, D, E, F);
arity!(7; A, B, C, D, E, F, G);
arity!(8; A, B, C, D, E, F, G, H);
arity!(9; A, B, C, D, E, F, G, H, I);

impl<V: Arity> Bound<V> {
    /// Number of values bound.
    pub fn arity(&self) -> usize {
        V::ARITY
    }
}

fn bound<V>(stmt: Stmt, values: V) -> Bound<V> {
    Bound { stmt, values }
}

/// A `schema_version` row as read.
pub type VersionRow = (Option<i32>,);

/// The id of the one row of `schema_version`.
pub const VERSION_ROW: i32 = 0;

/// A seq as stored (CQL bigint); seqs above `i64::MAX` cannot be stored.
pub fn seq_value(seq: u64) -> StorageResult<i64> {
    i64::try_from(seq).map_err(|_| StorageError::Internal(format!("seq {seq} exceeds bigint")))
}

// ---- schema ----

/// [`Stmt::VersionGet`].
pub fn version_get() -> Bound<(i32,)> {
    bound(Stmt::VersionGet, (VERSION_ROW,))
}

/// [`Stmt::VersionInsert`].
pub fn version_insert(version: i32) -> Bound<(i32, i32)> {
    bound(Stmt::VersionInsert, (VERSION_ROW, version))
}

/// [`Stmt::VersionUpdate`].
pub fn version_update(to: i32, from: i32) -> Bound<(i32, i32, i32)> {
    bound(Stmt::VersionUpdate, (to, VERSION_ROW, from))
}

/// [`Stmt::Ping`].
pub fn ping() -> Bound<(i32,)> {
    bound(Stmt::Ping, (VERSION_ROW,))
}

// ---- users ----

/// [`Stmt::UserInsert`]; an absent `last_seen` is left unset (no tombstone).
pub fn user_insert(u: &UserRecord) -> Bound<(&str, &str, &str, i64, MaybeUnset<i64>)> {
    let last_seen = match u.last_seen {
        Some(t) => MaybeUnset::Set(t),
        None => MaybeUnset::Unset,
    };
    bound(
        Stmt::UserInsert,
        (
            u.user_id.as_str(),
            u.username.as_str(),
            u.password_hash.as_str(),
            u.created_at,
            last_seen,
        ),
    )
}

/// [`Stmt::UserDelete`].
pub fn user_delete(user_id: &str) -> Bound<(&str,)> {
    bound(Stmt::UserDelete, (user_id,))
}

/// [`Stmt::UserById`].
pub fn user_by_id(user_id: &str) -> Bound<(&str,)> {
    bound(Stmt::UserById, (user_id,))
}

/// [`Stmt::UserSetLastSeen`].
pub fn user_set_last_seen(user_id: &str, at: i64) -> Bound<(i64, &str)> {
    bound(Stmt::UserSetLastSeen, (at, user_id))
}

/// [`Stmt::UsernameClaim`].
pub fn username_claim<'a>(username: &'a str, user_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::UsernameClaim, (username, user_id))
}

/// [`Stmt::UsernameGet`].
pub fn username_get(username: &str) -> Bound<(&str,)> {
    bound(Stmt::UsernameGet, (username,))
}

// ---- refresh tokens ----

/// [`Stmt::TokenPut`] with a TTL in seconds.
pub fn token_put(t: &RefreshTokenRecord, ttl_secs: i32) -> Bound<(&str, &str, i64, i32)> {
    bound(
        Stmt::TokenPut,
        (
            t.token_hash.as_str(),
            t.user_id.as_str(),
            t.expires_at,
            ttl_secs,
        ),
    )
}

/// [`Stmt::TokenGet`].
pub fn token_get(token_hash: &str) -> Bound<(&str,)> {
    bound(Stmt::TokenGet, (token_hash,))
}

/// [`Stmt::TokenTake`]: deletes the token only if it still is `t`.
pub fn token_take(t: &RefreshTokenRecord) -> Bound<(&str, &str, i64)> {
    bound(
        Stmt::TokenTake,
        (t.token_hash.as_str(), t.user_id.as_str(), t.expires_at),
    )
}

// ---- rooms ----

/// [`Stmt::RoomInsert`] (the head starts at 0 whatever `room.last_seq` says).
pub fn room_insert(room: &RoomRecord) -> Bound<(&str, &str, &str, i64)> {
    bound(
        Stmt::RoomInsert,
        (
            room.room_id.as_str(),
            room.kind.as_str(),
            room.name.as_str(),
            room.created_at,
        ),
    )
}

/// [`Stmt::RoomGet`].
pub fn room_get(room_id: &str) -> Bound<(&str,)> {
    bound(Stmt::RoomGet, (room_id,))
}

/// [`Stmt::RoomGetSerial`].
pub fn room_get_serial(room_id: &str) -> Bound<(&str,)> {
    bound(Stmt::RoomGetSerial, (room_id,))
}

/// [`Stmt::RoomRename`].
pub fn room_rename<'a>(room_id: &'a str, name: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::RoomRename, (name, room_id))
}

/// Values of [`Stmt::RoomClaim`].
pub type RoomClaimValues<'a> = (i64, Uuid, i64, &'a str, i64);

/// [`Stmt::RoomClaim`]: head `expected` -> `new_head`, batch `batch_id`
/// holding seqs `first_seq..=new_head`.
pub fn room_claim(
    room_id: &str,
    expected: u64,
    new_head: u64,
    batch_id: Uuid,
    first_seq: u64,
) -> StorageResult<Bound<RoomClaimValues<'_>>> {
    Ok(bound(
        Stmt::RoomClaim,
        (
            seq_value(new_head)?,
            batch_id,
            seq_value(first_seq)?,
            room_id,
            seq_value(expected)?,
        ),
    ))
}

// ---- members ----

/// [`Stmt::MemberPut`].
pub fn member_put<'a>(
    room_id: &'a str,
    m: &'a MemberRecord,
) -> Bound<(&'a str, &'a str, &'a str, &'a str, i64)> {
    bound(
        Stmt::MemberPut,
        (
            room_id,
            m.user_id.as_str(),
            m.username.as_str(),
            m.role.as_str(),
            m.joined_at,
        ),
    )
}

/// [`Stmt::MemberDelete`].
pub fn member_delete<'a>(room_id: &'a str, user_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::MemberDelete, (room_id, user_id))
}

/// [`Stmt::MembersOfRoom`].
pub fn members_of_room(room_id: &str) -> Bound<(&str,)> {
    bound(Stmt::MembersOfRoom, (room_id,))
}

/// [`Stmt::MemberIdsOfRoom`].
pub fn member_ids_of_room(room_id: &str, limit: i32) -> Bound<(&str, i32)> {
    bound(Stmt::MemberIdsOfRoom, (room_id, limit))
}

/// [`Stmt::MemberGet`].
pub fn member_get<'a>(room_id: &'a str, user_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::MemberGet, (room_id, user_id))
}

/// [`Stmt::UserRoomPut`].
pub fn user_room_put<'a>(user_id: &'a str, room_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::UserRoomPut, (user_id, room_id))
}

/// [`Stmt::UserRoomDelete`].
pub fn user_room_delete<'a>(user_id: &'a str, room_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::UserRoomDelete, (user_id, room_id))
}

/// [`Stmt::UserRoomsOfUser`].
pub fn user_rooms_of_user(user_id: &str) -> Bound<(&str,)> {
    bound(Stmt::UserRoomsOfUser, (user_id,))
}

// ---- direct rooms ----

/// [`Stmt::DirectGet`].
pub fn direct_get(pair_key: &str) -> Bound<(&str,)> {
    bound(Stmt::DirectGet, (pair_key,))
}

/// [`Stmt::DirectClaim`].
pub fn direct_claim<'a>(pair_key: &'a str, room_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::DirectClaim, (pair_key, room_id))
}

// ---- messages ----

/// Values of a full message row after its partition key columns.
type MessageTail<'a> = (i64, &'a str, &'a str, &'a str, &'a str, i64, &'a str);

fn message_tail(m: &StoredMessage) -> StorageResult<MessageTail<'_>> {
    Ok((
        seq_value(m.seq)?,
        m.message_id.as_str(),
        m.sender_id.as_str(),
        m.sender_name.as_str(),
        m.body.as_str(),
        m.sent_at,
        m.client_msg_id.as_str(),
    ))
}

/// Values of [`Stmt::MessageInsert`].
pub type MessageInsertValues<'a> = (
    &'a str,
    i64,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
);

/// [`Stmt::MessageInsert`] of a committed message into its bucket.
pub fn message_insert(m: &StoredMessage) -> StorageResult<Bound<MessageInsertValues<'_>>> {
    let (seq, id, sender, name, body, at, cid) = message_tail(m)?;
    let bucket = super::buckets::bucket_of(m.seq);
    Ok(bound(
        Stmt::MessageInsert,
        (
            m.room_id.as_str(),
            bucket,
            seq,
            id,
            sender,
            name,
            body,
            at,
            cid,
        ),
    ))
}

/// [`Stmt::MessagesAsc`] or [`Stmt::MessagesDesc`]: seqs `lo..=hi` of one
/// bucket, at most `limit`.
pub fn messages_range(
    room_id: &str,
    bucket: i64,
    lo: i64,
    hi: i64,
    limit: i32,
    descending: bool,
) -> Bound<(&str, i64, i64, i64, i32)> {
    let stmt = if descending {
        Stmt::MessagesDesc
    } else {
        Stmt::MessagesAsc
    };
    bound(stmt, (room_id, bucket, lo, hi, limit))
}

/// [`Stmt::MessagesBySeq`]: given seqs of one bucket.
pub fn messages_by_seq(room_id: &str, bucket: i64, seqs: Vec<i64>) -> Bound<(&str, i64, Vec<i64>)> {
    bound(Stmt::MessagesBySeq, (room_id, bucket, seqs))
}

/// Values of [`Stmt::StagedInsert`].
pub type StagedInsertValues<'a> = (
    &'a str,
    Uuid,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    i64,
    &'a str,
);

/// [`Stmt::StagedInsert`]: one message of commit attempt `batch_id`.
pub fn staged_insert(
    batch_id: Uuid,
    m: &StoredMessage,
) -> StorageResult<Bound<StagedInsertValues<'_>>> {
    let (seq, id, sender, name, body, at, cid) = message_tail(m)?;
    Ok(bound(
        Stmt::StagedInsert,
        (
            m.room_id.as_str(),
            batch_id,
            seq,
            id,
            sender,
            name,
            body,
            at,
            cid,
        ),
    ))
}

/// [`Stmt::StagedGet`].
pub fn staged_get(room_id: &str, batch_id: Uuid) -> Bound<(&str, Uuid)> {
    bound(Stmt::StagedGet, (room_id, batch_id))
}

/// [`Stmt::ClientIdInsert`] for a committed message.
pub fn client_id_insert(m: &StoredMessage) -> StorageResult<Bound<(&str, &str, i64)>> {
    Ok(bound(
        Stmt::ClientIdInsert,
        (
            m.room_id.as_str(),
            m.client_msg_id.as_str(),
            seq_value(m.seq)?,
        ),
    ))
}

/// [`Stmt::ClientIdsGet`] for up to [`super::messages::IN_LIST_MAX`] keys.
pub fn client_ids_get<'a>(room_id: &'a str, ids: Vec<&'a str>) -> Bound<(&'a str, Vec<&'a str>)> {
    bound(Stmt::ClientIdsGet, (room_id, ids))
}

// ---- read states ----

/// [`Stmt::DeliveredRaise`]: the value is also the write timestamp.
pub fn delivered_raise<'a>(
    room_id: &'a str,
    user_id: &'a str,
    value: u64,
) -> StorageResult<Bound<(i64, i64, &'a str, &'a str)>> {
    let v = seq_value(value)?;
    Ok(bound(Stmt::DeliveredRaise, (v, v, room_id, user_id)))
}

/// [`Stmt::ReadRaise`]: the value is also the write timestamp.
pub fn read_raise<'a>(
    room_id: &'a str,
    user_id: &'a str,
    value: u64,
) -> StorageResult<Bound<(i64, i64, &'a str, &'a str)>> {
    let v = seq_value(value)?;
    Ok(bound(Stmt::ReadRaise, (v, v, room_id, user_id)))
}

/// [`Stmt::WatermarksGet`].
pub fn watermarks_get<'a>(room_id: &'a str, user_id: &'a str) -> Bound<(&'a str, &'a str)> {
    bound(Stmt::WatermarksGet, (room_id, user_id))
}

/// [`Stmt::WatermarksOfRoom`].
pub fn watermarks_of_room(room_id: &str) -> Bound<(&str,)> {
    bound(Stmt::WatermarksOfRoom, (room_id,))
}
