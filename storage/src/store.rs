//! The storage trait every backend implements.
//!
//! Each method addresses one partition by key (a user, a username, a room, a
//! room's members, a user's rooms, a pair, a room's messages, one read state,
//! one refresh token), so that it maps onto ScyllaDB's model without joins or
//! multi-partition transactions. The one conditional write is
//! [`Store::commit_messages`], which enforces the split-owner rule.

use async_trait::async_trait;

use crate::error::StorageResult;
use crate::model::{
    CommitOutcome, HistoryRange, MemberRecord, NewMessage, RefreshTokenRecord, RoomRecord,
    StoredMessage, UserRecord, Watermarks,
};

/// Persistent state of a Parley cluster.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip proving storage answers (for `/ready`).
    async fn ping(&self) -> StorageResult<()>;

    /// How many independent reads (one per room of a user, say) a caller
    /// should keep in flight at once; more would only wait inside the
    /// backend. At least 1.
    fn read_parallelism(&self) -> usize {
        1
    }

    // ---- users ----

    /// Creates a user; `AlreadyExists` if the username is taken (even under
    /// concurrent registration of the same name).
    async fn create_user(&self, user: &UserRecord) -> StorageResult<()>;
    /// Looks a user up by canonical username.
    async fn user_by_name(&self, username: &str) -> StorageResult<Option<UserRecord>>;
    /// Looks a user up by id.
    async fn user_by_id(&self, user_id: &str) -> StorageResult<Option<UserRecord>>;
    /// Records when the user was last seen connected.
    async fn set_last_seen(&self, user_id: &str, at: i64) -> StorageResult<()>;

    // ---- refresh tokens ----

    /// Stores a refresh token hash.
    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> StorageResult<()>;
    /// Atomically removes and returns a refresh token (rotation: a token can
    /// be taken once). Expired tokens are returned too; the caller checks.
    async fn take_refresh_token(
        &self,
        token_hash: &str,
    ) -> StorageResult<Option<RefreshTokenRecord>>;

    // ---- rooms and members ----

    /// Creates a room with its initial members (room row, member rows, and
    /// each member's user-rooms entry). `AlreadyExists` if the id is taken.
    async fn create_room(&self, room: &RoomRecord, members: &[MemberRecord]) -> StorageResult<()>;
    /// Creates the direct room of a pair unless one exists; returns the room
    /// id that holds the pair and whether this call created it. `pair_key` is
    /// the two user ids sorted and joined with `:`.
    async fn create_direct_room(
        &self,
        pair_key: &str,
        room: &RoomRecord,
        members: &[MemberRecord],
    ) -> StorageResult<(String, bool)>;
    /// Reads a room row (with its current `last_seq`).
    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>>;
    /// Renames a room; `NotFound` when there is no such room.
    async fn rename_room(&self, room_id: &str, name: &str) -> StorageResult<()>;
    /// All members of a room, by join time.
    async fn members(&self, room_id: &str) -> StorageResult<Vec<MemberRecord>>;
    /// Ids of at most `limit` members of a room, in no particular order: all
    /// of them when the room has at most `limit`. Reads no more rows than
    /// asked for, so "is this room small, and if so who is in it" costs the
    /// same in a room of ten and one of a hundred thousand.
    async fn member_ids_up_to(&self, room_id: &str, limit: usize) -> StorageResult<Vec<String>>;
    /// One member of a room, or `None` when the user is not a member.
    async fn member(&self, room_id: &str, user_id: &str) -> StorageResult<Option<MemberRecord>>;
    /// Adds a member or changes their role (and their user-rooms entry).
    async fn put_member(&self, room_id: &str, member: &MemberRecord) -> StorageResult<()>;
    /// Removes a member (and their user-rooms entry); no error if absent.
    async fn remove_member(&self, room_id: &str, user_id: &str) -> StorageResult<()>;
    /// Ids of the rooms a user is a member of.
    async fn user_rooms(&self, user_id: &str) -> StorageResult<Vec<String>>;

    // ---- messages ----

    /// Finishes whatever a committer of the room left half done (it died
    /// between making a batch the room's head and writing it into history),
    /// so history holds every seq up to the room's `last_seq`. Called before
    /// a room is served; backends whose commits are atomic have nothing to
    /// do. An unknown room is not an error here.
    async fn settle_room(&self, room_id: &str) -> StorageResult<()> {
        let _ = room_id;
        Ok(())
    }

    /// Commits a batch of messages to a room as one durable write.
    ///
    /// Succeeds only if the room's head is still `expected_last_seq`
    /// (otherwise `HeadMoved`, nothing written). Messages whose
    /// `client_msg_id` already exists in the room (or earlier in the batch)
    /// are not written and come back as `Duplicate`; the others get
    /// consecutive seqs from `expected_last_seq + 1` in batch order. Returns
    /// one outcome per input, in order. Durable (fsync'd or replicated)
    /// when it returns.
    async fn commit_messages(
        &self,
        room_id: &str,
        expected_last_seq: u64,
        messages: &[NewMessage],
    ) -> StorageResult<Vec<CommitOutcome>>;
    /// Reads a slice of a room's history, always ascending by seq.
    async fn messages(
        &self,
        room_id: &str,
        range: HistoryRange,
    ) -> StorageResult<Vec<StoredMessage>>;

    // ---- read states ----

    /// A user's watermarks in a room (zeros when none stored).
    async fn watermarks(&self, user_id: &str, room_id: &str) -> StorageResult<Watermarks>;
    /// All stored watermarks of a room's members, as (user_id, watermarks).
    async fn room_watermarks(&self, room_id: &str) -> StorageResult<Vec<(String, Watermarks)>>;
    /// Raises a user's watermarks in a room to at least the given values;
    /// never lowers either.
    async fn raise_watermarks(
        &self,
        user_id: &str,
        room_id: &str,
        marks: Watermarks,
    ) -> StorageResult<()>;
    /// Raises several users' watermarks in one room, as
    /// [`Store::raise_watermarks`] does for each (a user may appear more
    /// than once). A room flushes the receipts it gathered this way, so a
    /// backend that pays per write (the embedded store's fsync) can write
    /// them together. On error some of them may have been raised.
    async fn raise_room_watermarks(
        &self,
        room_id: &str,
        marks: &[(String, Watermarks)],
    ) -> StorageResult<()> {
        for (user_id, w) in marks {
            self.raise_watermarks(user_id, room_id, *w).await?;
        }
        Ok(())
    }
}
