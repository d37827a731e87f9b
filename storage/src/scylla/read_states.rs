//! Read states: watermarks that never fall, without a read or an LWT.
//!
//! Each watermark column is written with `USING TIMESTAMP <value>`. Cells
//! are reconciled by write timestamp, so of all writes ever made to a cell
//! the one with the highest value wins, whatever order they arrive in and
//! however they race: a raise to a lower value is simply shadowed. Cost:
//! two plain (idempotent, retryable) single-row writes, sent concurrently.
//! The rule that makes it sound: nothing else may write these columns (no
//! deletes, no other timestamps); the table is used for nothing else.

use futures_util::future::{try_join, try_join_all};

use super::binds;
use super::exec::Executor;
use super::REQUESTS_IN_FLIGHT;
use crate::error::{StorageError, StorageResult};
use crate::model::Watermarks;

/// A user's row of `read_states` as read.
pub type MarksRow = (Option<i64>, Option<i64>);

/// A room's `read_states` rows as read.
pub type RoomMarksRow = (String, Option<i64>, Option<i64>);

/// A user's watermarks in a room (zeros when none stored).
pub async fn watermarks(x: &Executor, user_id: &str, room_id: &str) -> StorageResult<Watermarks> {
    let row: Option<MarksRow> = x.one(&binds::watermarks_get(room_id, user_id)).await?;
    match row {
        Some((d, r)) => Ok(Watermarks {
            delivered_seq: mark(d)?,
            read_seq: mark(r)?,
        }),
        None => Ok(Watermarks::default()),
    }
}

/// Every stored read state of a room.
pub async fn room_watermarks(
    x: &Executor,
    room_id: &str,
) -> StorageResult<Vec<(String, Watermarks)>> {
    let rows: Vec<RoomMarksRow> = x.all(&binds::watermarks_of_room(room_id)).await?;
    rows.into_iter()
        .map(|(user, d, r)| {
            Ok((
                user,
                Watermarks {
                    delivered_seq: mark(d)?,
                    read_seq: mark(r)?,
                },
            ))
        })
        .collect()
}

/// Raises both watermarks to at least the given values.
pub async fn raise(
    x: &Executor,
    user_id: &str,
    room_id: &str,
    marks: Watermarks,
) -> StorageResult<()> {
    let delivered = binds::delivered_raise(room_id, user_id, marks.delivered_seq)?;
    let read = binds::read_raise(room_id, user_id, marks.read_seq)?;
    try_join(x.execute(&delivered), x.execute(&read)).await?;
    Ok(())
}

/// Raises several users' watermarks in one room: the same writes as
/// [`raise`], up to [`REQUESTS_IN_FLIGHT`] users at a time instead of one
/// round trip after another.
pub async fn raise_many(
    x: &Executor,
    room_id: &str,
    marks: &[(String, Watermarks)],
) -> StorageResult<()> {
    for chunk in marks.chunks(REQUESTS_IN_FLIGHT) {
        try_join_all(
            chunk
                .iter()
                .map(|(user_id, w)| raise(x, user_id, room_id, *w)),
        )
        .await?;
    }
    Ok(())
}

fn mark(v: Option<i64>) -> StorageResult<u64> {
    u64::try_from(v.unwrap_or(0))
        .map_err(|_| StorageError::Schema("negative watermark in read_states".into()))
}
