//! Refresh tokens (hashed).

use rusqlite::{Connection, OptionalExtension};

use super::sqlerr::map_err;
use crate::error::StorageResult;
use crate::model::RefreshTokenRecord;

/// Stores a refresh token hash (replacing a row with the same hash).
pub(crate) fn put_refresh_token(conn: &Connection, t: &RefreshTokenRecord) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (token_hash) DO UPDATE
         SET user_id = excluded.user_id, expires_at = excluded.expires_at",
    )
    .and_then(|mut st| st.execute((&t.token_hash, &t.user_id, t.expires_at)))
    .map_err(map_err)?;
    Ok(())
}

/// Deletes a refresh token and returns it; runs inside the writer's
/// transaction, so exactly one caller gets it.
pub(crate) fn take_refresh_token(
    conn: &Connection,
    token_hash: &str,
) -> StorageResult<Option<RefreshTokenRecord>> {
    conn.prepare_cached(
        "DELETE FROM refresh_tokens WHERE token_hash = ?1
         RETURNING token_hash, user_id, expires_at",
    )
    .and_then(|mut st| {
        st.query_row([token_hash], |r| {
            Ok(RefreshTokenRecord {
                token_hash: r.get(0)?,
                user_id: r.get(1)?,
                expires_at: r.get(2)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}
