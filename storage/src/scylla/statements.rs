//! Every CQL statement the backend runs, with how it must be executed.
//!
//! Each [`Stmt`] has fixed text (prepared once at connect, values only ever
//! bound to `?` markers) and a [`StmtKind`] from which its consistency,
//! serial consistency and idempotency follow ([`Stmt::flags`]):
//!
//! | kind | consistency | serial | idempotent (driver may retry) |
//! |---|---|---|---|
//! | `Read` | configured (QUORUM) | - | yes |
//! | `SerialRead` | configured serial (SERIAL) as the read level | - | yes |
//! | `Write` (plain upsert/delete) | configured | - | yes |
//! | `Lwt` (`IF ...`) | configured (commit phase) | configured serial (Paxos) | no |
//!
//! There are no counters; the only non-idempotent statements are the
//! lightweight transactions, whose retry after a timeout could apply a
//! second time or report "not applied" for the caller's own write.

use scylla::statement::{Consistency, SerialConsistency};

/// How a statement touches the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StmtKind {
    /// A plain read at the configured consistency.
    Read,
    /// A linearizable read (Paxos read at the serial consistency).
    SerialRead,
    /// A plain, idempotent upsert or delete.
    Write,
    /// A lightweight transaction (conditional write); not idempotent.
    Lwt,
}

/// The execution settings of one statement under a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StmtFlags {
    /// Consistency level of the request.
    pub consistency: Consistency,
    /// Serial consistency (lightweight transactions only).
    pub serial_consistency: Option<SerialConsistency>,
    /// Whether the driver may retry it or run it speculatively.
    pub idempotent: bool,
}

macro_rules! statements {
    ($( $(#[$doc:meta])* $name:ident = $kind:ident, $cql:expr; )*) => {
        /// Every statement the ScyllaDB backend prepares.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Stmt {
            $( $(#[$doc])* $name, )*
        }

        impl Stmt {
            /// All statements, in declaration order (the index is the
            /// position of the prepared statement at runtime).
            pub const ALL: &'static [Stmt] = &[ $( Stmt::$name, )* ];

            /// The statement's CQL text.
            pub const fn cql(self) -> &'static str {
                match self { $( Stmt::$name => $cql, )* }
            }

            /// What kind of statement it is.
            pub const fn kind(self) -> StmtKind {
                match self { $( Stmt::$name => StmtKind::$kind, )* }
            }
        }
    };
}

statements! {
    // ---- schema ----
    /// Reads the schema version (linearizable: it is written by LWT).
    VersionGet = SerialRead, "SELECT version FROM schema_version WHERE id = ?";
    /// Records the schema version of a fresh keyspace.
    VersionInsert = Lwt, "INSERT INTO schema_version (id, version) VALUES (?, ?) IF NOT EXISTS";
    /// Moves the schema version up from a known one.
    VersionUpdate = Lwt, "UPDATE schema_version SET version = ? WHERE id = ? IF version = ?";
    /// `ping`: one read at the configured consistency in our keyspace.
    Ping = Read, "SELECT version FROM schema_version WHERE id = ?";

    // ---- users ----
    /// Inserts a user row unless the id exists.
    UserInsert = Lwt, "INSERT INTO users (user_id, username, password_hash, created_at, last_seen) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS";
    /// Removes the user row of a registration that lost its name.
    UserDelete = Lwt, "DELETE FROM users WHERE user_id = ? IF EXISTS";
    /// Reads a user by id.
    UserById = Read, "SELECT user_id, username, password_hash, created_at, last_seen FROM users WHERE user_id = ?";
    /// Sets last-seen.
    UserSetLastSeen = Write, "UPDATE users SET last_seen = ? WHERE user_id = ?";
    /// Claims a username for a user id.
    UsernameClaim = Lwt, "INSERT INTO usernames (username, user_id) VALUES (?, ?) IF NOT EXISTS";
    /// Resolves a username to a user id.
    UsernameGet = Read, "SELECT user_id FROM usernames WHERE username = ?";

    // ---- refresh tokens ----
    /// Stores a refresh token hash with a TTL.
    TokenPut = Lwt, "INSERT INTO refresh_tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?";
    /// Reads a refresh token.
    TokenGet = Read, "SELECT token_hash, user_id, expires_at FROM refresh_tokens WHERE token_hash = ?";
    /// Takes (deletes) a refresh token if it is still the one read.
    TokenTake = Lwt, "DELETE FROM refresh_tokens WHERE token_hash = ? IF user_id = ? AND expires_at = ?";

    // ---- rooms ----
    /// Creates a room at head 0 unless the id exists.
    RoomInsert = Lwt, "INSERT INTO rooms (room_id, kind, name, created_at, last_seq) VALUES (?, ?, ?, ?, 0) IF NOT EXISTS";
    /// Reads a room row.
    RoomGet = Read, "SELECT room_id, kind, name, created_at, last_seq, pending_batch, pending_from FROM rooms WHERE room_id = ?";
    /// Reads a room row linearizably (sees every finished head claim).
    RoomGetSerial = SerialRead, "SELECT room_id, kind, name, created_at, last_seq, pending_batch, pending_from FROM rooms WHERE room_id = ?";
    /// Renames an existing room.
    RoomRename = Lwt, "UPDATE rooms SET name = ? WHERE room_id = ? IF EXISTS";
    /// The head claim: moves the head and records the claimed batch, only
    /// if the head is still the expected one.
    RoomClaim = Lwt, "UPDATE rooms SET last_seq = ?, pending_batch = ?, pending_from = ? WHERE room_id = ? IF last_seq = ?";

    // ---- members ----
    /// Adds or overwrites a member row.
    MemberPut = Write, "INSERT INTO room_members (room_id, user_id, username, role, joined_at) VALUES (?, ?, ?, ?, ?)";
    /// Removes a member row.
    MemberDelete = Write, "DELETE FROM room_members WHERE room_id = ? AND user_id = ?";
    /// All member rows of a room.
    MembersOfRoom = Read, "SELECT user_id, username, role, joined_at FROM room_members WHERE room_id = ?";
    /// Ids of a room's members, limited.
    MemberIdsOfRoom = Read, "SELECT user_id FROM room_members WHERE room_id = ? LIMIT ?";
    /// One member row.
    MemberGet = Read, "SELECT user_id, username, role, joined_at FROM room_members WHERE room_id = ? AND user_id = ?";
    /// Adds a user-rooms entry.
    UserRoomPut = Write, "INSERT INTO user_rooms (user_id, room_id) VALUES (?, ?)";
    /// Removes a user-rooms entry.
    UserRoomDelete = Write, "DELETE FROM user_rooms WHERE user_id = ? AND room_id = ?";
    /// A user's room ids, ascending.
    UserRoomsOfUser = Read, "SELECT room_id FROM user_rooms WHERE user_id = ?";

    // ---- direct rooms ----
    /// The room of a pair, if any.
    DirectGet = Read, "SELECT room_id FROM direct_rooms WHERE pair_key = ?";
    /// Claims a pair for a room id.
    DirectClaim = Lwt, "INSERT INTO direct_rooms (pair_key, room_id) VALUES (?, ?) IF NOT EXISTS";

    // ---- messages ----
    /// Writes one message into its bucket partition.
    MessageInsert = Write, "INSERT INTO messages (room_id, bucket, seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    /// A seq range of one bucket, ascending, limited.
    MessagesAsc = Read, "SELECT seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id FROM messages WHERE room_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq ASC LIMIT ?";
    /// A seq range of one bucket, descending, limited.
    MessagesDesc = Read, "SELECT seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id FROM messages WHERE room_id = ? AND bucket = ? AND seq >= ? AND seq <= ? ORDER BY seq DESC LIMIT ?";
    /// Given seqs of one bucket.
    MessagesBySeq = Read, "SELECT seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id FROM messages WHERE room_id = ? AND bucket = ? AND seq IN ?";
    /// Stages one message of a commit attempt.
    StagedInsert = Write, "INSERT INTO message_batches (room_id, batch_id, seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    /// All staged messages of a commit attempt.
    StagedGet = Read, "SELECT seq, message_id, sender_id, sender_name, body, sent_at, client_msg_id FROM message_batches WHERE room_id = ? AND batch_id = ?";
    /// Records a message's idempotency key.
    ClientIdInsert = Write, "INSERT INTO client_msg_ids (room_id, client_msg_id, seq) VALUES (?, ?, ?)";
    /// Looks idempotency keys up.
    ClientIdsGet = Read, "SELECT client_msg_id, seq FROM client_msg_ids WHERE room_id = ? AND client_msg_id IN ?";

    // ---- read states ----
    /// Raises delivered_seq: the write timestamp is the value, so the
    /// highest value wins.
    DeliveredRaise = Write, "UPDATE read_states USING TIMESTAMP ? SET delivered_seq = ? WHERE room_id = ? AND user_id = ?";
    /// Raises read_seq the same way.
    ReadRaise = Write, "UPDATE read_states USING TIMESTAMP ? SET read_seq = ? WHERE room_id = ? AND user_id = ?";
    /// One user's watermarks in a room.
    WatermarksGet = Read, "SELECT delivered_seq, read_seq FROM read_states WHERE room_id = ? AND user_id = ?";
    /// All watermarks of a room.
    WatermarksOfRoom = Read, "SELECT user_id, delivered_seq, read_seq FROM read_states WHERE room_id = ?";
}

impl Stmt {
    /// Position in [`Stmt::ALL`].
    pub fn index(self) -> usize {
        Stmt::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// Number of `?` bind markers in the text (outside string literals).
    pub fn markers(self) -> usize {
        count_markers(self.cql())
    }

    /// How the statement is executed under the given levels.
    pub fn flags(self, consistency: Consistency, serial: SerialConsistency) -> StmtFlags {
        match self.kind() {
            StmtKind::Read | StmtKind::Write => StmtFlags {
                consistency,
                serial_consistency: None,
                idempotent: true,
            },
            StmtKind::SerialRead => StmtFlags {
                consistency: match serial {
                    SerialConsistency::Serial => Consistency::Serial,
                    SerialConsistency::LocalSerial => Consistency::LocalSerial,
                },
                serial_consistency: None,
                idempotent: true,
            },
            StmtKind::Lwt => StmtFlags {
                consistency,
                serial_consistency: Some(serial),
                idempotent: false,
            },
        }
    }
}

/// Counts `?` bind markers outside quoted strings and identifiers.
pub fn count_markers(cql: &str) -> usize {
    let mut n = 0;
    let mut quote: Option<char> = None;
    for c in cql.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' => n += 1,
            None => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_counted_outside_quotes() {
        assert_eq!(count_markers("SELECT a FROM t WHERE k = ? AND c IN ?"), 2);
        assert_eq!(count_markers("INSERT INTO t (a) VALUES ('?')"), 0);
        assert_eq!(count_markers("SELECT \"?\" FROM t WHERE k = ?"), 1);
    }

    #[test]
    fn names_and_indexes_are_unique() {
        for (i, s) in Stmt::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        let mut texts: Vec<(&str, StmtKind)> =
            Stmt::ALL.iter().map(|s| (s.cql(), s.kind())).collect();
        texts.sort_by_key(|t| t.0);
        texts.dedup();
        // Ping and VersionGet share text but differ in kind; nothing else.
        assert_eq!(texts.len(), Stmt::ALL.len());
    }
}
