//! Schema and migrations.
//!
//! The schema version lives in the one-row table `schema_version`. Each entry
//! of [`MIGRATIONS`] moves the schema one version up; they run in one
//! `BEGIN IMMEDIATE` transaction, so several processes opening the same file
//! at once migrate it exactly once. A file whose version is newer than
//! [`SCHEMA_VERSION`] is refused (an older binary must not write to a schema
//! it does not understand).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::sqlerr::map_err;
use crate::error::{StorageError, StorageResult};

/// Migration `i` takes the schema from version `i` to version `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE users (
        user_id       TEXT PRIMARY KEY NOT NULL,
        username      TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        last_seen     INTEGER
    );
    CREATE TABLE refresh_tokens (
        token_hash TEXT PRIMARY KEY NOT NULL,
        user_id    TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE TABLE rooms (
        room_id    TEXT PRIMARY KEY NOT NULL,
        kind       TEXT NOT NULL,
        name       TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE room_members (
        room_id   TEXT NOT NULL,
        user_id   TEXT NOT NULL,
        username  TEXT NOT NULL,
        role      TEXT NOT NULL,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    );
    CREATE TABLE user_rooms (
        user_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    CREATE TABLE direct_rooms (
        pair_key TEXT PRIMARY KEY NOT NULL,
        room_id  TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        room_id       TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        message_id    TEXT NOT NULL,
        sender_id     TEXT NOT NULL,
        sender_name   TEXT NOT NULL,
        body          TEXT NOT NULL,
        sent_at       INTEGER NOT NULL,
        client_msg_id TEXT NOT NULL,
        PRIMARY KEY (room_id, seq)
    );
    CREATE TABLE client_msg_ids (
        room_id       TEXT NOT NULL,
        client_msg_id TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        PRIMARY KEY (room_id, client_msg_id)
    ) WITHOUT ROWID;
    CREATE TABLE read_states (
        user_id       TEXT NOT NULL,
        room_id       TEXT NOT NULL,
        delivered_seq INTEGER NOT NULL DEFAULT 0,
        read_seq      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    CREATE INDEX read_states_by_room ON read_states (room_id);
    "#,
];

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one with
/// [`StorageError::Schema`]. Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection) -> StorageResult<u32> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
            id      INTEGER PRIMARY KEY CHECK (id = 0),
            version INTEGER NOT NULL
        );",
    )
    .map_err(map_err)?;
    let found: i64 = tx
        .query_row("SELECT version FROM schema_version WHERE id = 0", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(map_err)?
        .unwrap_or(0);
    let found = u32::try_from(found)
        .map_err(|_| StorageError::Schema(format!("invalid schema version {found}")))?;
    if found > SCHEMA_VERSION {
        return Err(StorageError::Schema(format!(
            "database schema version {found} is newer than this build understands \
             ({SCHEMA_VERSION}); upgrade Parley"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(to_version = i + 1, "migrating embedded store schema");
        tx.execute_batch(sql).map_err(map_err)?;
    }
    if found < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO schema_version (id, version) VALUES (0, ?1)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            [SCHEMA_VERSION],
        )
        .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)?;
    Ok(found)
}
