//! Users, usernames and last-seen.
//!
//! Registration writes the `users` row first (`IF NOT EXISTS`), then claims
//! the name in `usernames` (`IF NOT EXISTS`): Paxos decides between
//! concurrent registrations of one name. The loser deletes its own user row
//! (conditionally, so the delete is ordered after its insert). If a node
//! dies between the two steps, what is left is a user row no name points
//! to: unreachable, harmless. The other order could leave a name pointing
//! at no user, blocking that name for good. Cost: two LWTs per
//! registration (three on a conflict); argon2 hashing dominates anyway.

use super::binds;
use super::exec::Executor;
use crate::error::{StorageError, StorageResult};
use crate::model::UserRecord;

/// A `usernames` row as read.
pub type UsernameRow = (Option<String>,);

/// A `users` row as read (every column but the key may be null: a
/// last-seen update of an unknown id leaves a row with only that column).
pub type UserRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// Creates a user; `AlreadyExists` when the name (or the id) is taken.
pub async fn create_user(x: &Executor, u: &UserRecord) -> StorageResult<()> {
    let inserted = x.lwt(&binds::user_insert(u)).await?;
    if !inserted.applied {
        return Err(StorageError::AlreadyExists);
    }
    let claim = x
        .lwt(&binds::username_claim(&u.username, &u.user_id))
        .await?;
    if claim.applied || claim.text("user_id") == Some(u.user_id.as_str()) {
        return Ok(());
    }
    // Lost the name: remove our row. A failure here leaves an unreachable
    // row, which is harmless, so the conflict is still what we report.
    if let Err(e) = x.lwt(&binds::user_delete(&u.user_id)).await {
        tracing::warn!(error = %e, "could not remove the row of a refused registration");
    }
    Err(StorageError::AlreadyExists)
}

/// Looks a user up by canonical name.
pub async fn user_by_name(x: &Executor, username: &str) -> StorageResult<Option<UserRecord>> {
    let id: Option<UsernameRow> = x.one(&binds::username_get(username)).await?;
    match id.and_then(|(id,)| id) {
        Some(id) => user_by_id(x, &id).await,
        None => Ok(None),
    }
}

/// Looks a user up by id.
pub async fn user_by_id(x: &Executor, user_id: &str) -> StorageResult<Option<UserRecord>> {
    let row: Option<UserRow> = x.one(&binds::user_by_id(user_id)).await?;
    Ok(row.and_then(user_from_row))
}

/// Sets last-seen (a plain, idempotent update).
pub async fn set_last_seen(x: &Executor, user_id: &str, at: i64) -> StorageResult<()> {
    x.execute(&binds::user_set_last_seen(user_id, at)).await?;
    Ok(())
}

/// A complete user from a row; `None` for a partial row (no name or hash).
pub fn user_from_row(row: UserRow) -> Option<UserRecord> {
    let (user_id, username, password_hash, created_at, last_seen) = row;
    Some(UserRecord {
        user_id,
        username: username?,
        password_hash: password_hash?,
        created_at: created_at.unwrap_or(0),
        last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_rows_are_not_users() {
        assert_eq!(
            user_from_row(("u".into(), None, None, None, Some(5))),
            None,
            "a row holding only last_seen is no user"
        );
        assert_eq!(
            user_from_row((
                "u".into(),
                Some("n".into()),
                Some("h".into()),
                Some(1),
                None
            )),
            Some(UserRecord {
                user_id: "u".into(),
                username: "n".into(),
                password_hash: "h".into(),
                created_at: 1,
                last_seen: None,
            })
        );
    }
}
