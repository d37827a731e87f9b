//! Users.

use rusqlite::{Connection, OptionalExtension, Row};

use super::sqlerr::{map_err, map_unique};
use crate::error::StorageResult;
use crate::model::UserRecord;

const USER_COLUMNS: &str = "user_id, username, password_hash, created_at, last_seen";

/// Inserts a user; `AlreadyExists` when the id or the username is taken.
pub(crate) fn create_user(conn: &Connection, u: &UserRecord) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO users (user_id, username, password_hash, created_at, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute((
            &u.user_id,
            &u.username,
            &u.password_hash,
            u.created_at,
            u.last_seen,
        ))
    })
    .map_err(map_unique)?;
    Ok(())
}

/// Reads a user by canonical username.
pub(crate) fn user_by_name(conn: &Connection, username: &str) -> StorageResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.query_row([username], user_from_row).optional())
        .map_err(map_err)
}

/// Reads a user by id.
pub(crate) fn user_by_id(conn: &Connection, user_id: &str) -> StorageResult<Option<UserRecord>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE user_id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut st| st.query_row([user_id], user_from_row).optional())
        .map_err(map_err)
}

/// Sets `last_seen`; a no-op for an unknown user.
pub(crate) fn set_last_seen(conn: &Connection, user_id: &str, at: i64) -> StorageResult<()> {
    conn.prepare_cached("UPDATE users SET last_seen = ?2 WHERE user_id = ?1")
        .and_then(|mut st| st.execute((user_id, at)))
        .map_err(map_err)?;
    Ok(())
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        user_id: r.get(0)?,
        username: r.get(1)?,
        password_hash: r.get(2)?,
        created_at: r.get(3)?,
        last_seen: r.get(4)?,
    })
}
