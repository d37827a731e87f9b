//! Records as stored. Times are milliseconds since the Unix epoch.

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Id (UUIDv7).
    pub user_id: String,
    /// Canonical lowercase name; unique.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Creation time.
    pub created_at: i64,
    /// Last time the user was seen connected, if ever.
    pub last_seen: Option<i64>,
}

/// A stored refresh token (only its hash is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    /// SHA-256 of the token, hex.
    pub token_hash: String,
    /// Owner.
    pub user_id: String,
    /// Expiry time.
    pub expires_at: i64,
}

/// A room's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRecord {
    /// Id (UUIDv7).
    pub room_id: String,
    /// `group` or `direct`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// Creation time.
    pub created_at: i64,
    /// Highest committed seq; 0 for an empty room. Ignored on create.
    pub last_seq: u64,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Member's id.
    pub user_id: String,
    /// Member's name (denormalised for reads without a join).
    pub username: String,
    /// `owner`, `admin` or `member`.
    pub role: String,
    /// When the member joined.
    pub joined_at: i64,
}

/// A message to commit; the seq is assigned by the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Id (UUIDv7), chosen by the room owner.
    pub message_id: String,
    /// Sender's id.
    pub sender_id: String,
    /// Sender's name.
    pub sender_name: String,
    /// Text.
    pub body: String,
    /// Send time.
    pub sent_at: i64,
    /// The sender's idempotency key, unique per room.
    pub client_msg_id: String,
}

/// A committed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Room.
    pub room_id: String,
    /// Position in the room (from 1, gapless).
    pub seq: u64,
    /// Id.
    pub message_id: String,
    /// Sender's id.
    pub sender_id: String,
    /// Sender's name.
    pub sender_name: String,
    /// Text.
    pub body: String,
    /// Send time.
    pub sent_at: i64,
    /// The sender's idempotency key.
    pub client_msg_id: String,
}

/// What the commit did with one [`NewMessage`] of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Newly written with the next seq.
    Committed(StoredMessage),
    /// The room already had a message with this `client_msg_id` (from an
    /// earlier batch or earlier in this batch); nothing was written and this
    /// is the existing message.
    Duplicate(StoredMessage),
}

impl CommitOutcome {
    /// The stored message, new or existing.
    pub fn message(&self) -> &StoredMessage {
        match self {
            CommitOutcome::Committed(m) | CommitOutcome::Duplicate(m) => m,
        }
    }
}

/// Which slice of a room's history to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRange {
    /// Up to `limit` messages with seq > `after_seq` (and < `before_seq` when
    /// given), the lowest seqs first.
    After {
        /// Exclusive lower bound.
        after_seq: u64,
        /// Optional exclusive upper bound.
        before_seq: Option<u64>,
        /// Maximum count.
        limit: u32,
    },
    /// Up to `limit` messages with seq < `before_seq`, the highest seqs of
    /// that range (the page just before `before_seq`).
    Before {
        /// Exclusive upper bound.
        before_seq: u64,
        /// Maximum count.
        limit: u32,
    },
}

/// A user's watermarks in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Watermarks {
    /// Highest seq delivered to any of the user's devices.
    pub delivered_seq: u64,
    /// Highest seq the user has read.
    pub read_seq: u64,
}
