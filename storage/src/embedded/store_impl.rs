//! [`Store`] for [`EmbeddedStore`]: each call copies its arguments and runs
//! the matching area function on a reader or in a write transaction; message
//! commits and watermark raises go to the committer's group transactions.

use async_trait::async_trait;

use super::committer::{CommitJob, Job, WatermarksJob};
use super::{messages, read_states, rooms, tokens, users, EmbeddedStore};
use crate::error::StorageResult;
use crate::model::{
    CommitOutcome, HistoryRange, MemberRecord, NewMessage, RefreshTokenRecord, RoomRecord,
    StoredMessage, UserRecord, Watermarks,
};
use crate::store::Store;

#[async_trait]
impl Store for EmbeddedStore {
    async fn ping(&self) -> StorageResult<()> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map_err(super::sqlerr::map_err)?;
            Ok(())
        })
        .await
    }

    /// One read per reader connection; more would block pool threads on
    /// the readers' locks.
    fn read_parallelism(&self) -> usize {
        super::pool::READERS
    }

    async fn create_user(&self, user: &UserRecord) -> StorageResult<()> {
        let user = user.clone();
        self.write(move |c| users::create_user(c, &user)).await
    }

    async fn user_by_name(&self, username: &str) -> StorageResult<Option<UserRecord>> {
        let username = username.to_owned();
        self.read(move |c| users::user_by_name(c, &username)).await
    }

    async fn user_by_id(&self, user_id: &str) -> StorageResult<Option<UserRecord>> {
        let user_id = user_id.to_owned();
        self.read(move |c| users::user_by_id(c, &user_id)).await
    }

    async fn set_last_seen(&self, user_id: &str, at: i64) -> StorageResult<()> {
        let user_id = user_id.to_owned();
        self.write(move |c| users::set_last_seen(c, &user_id, at))
            .await
    }

    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> StorageResult<()> {
        let token = token.clone();
        self.write(move |c| tokens::put_refresh_token(c, &token))
            .await
    }

    async fn take_refresh_token(
        &self,
        token_hash: &str,
    ) -> StorageResult<Option<RefreshTokenRecord>> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| tokens::take_refresh_token(c, &token_hash))
            .await
    }

    async fn create_room(&self, room: &RoomRecord, members: &[MemberRecord]) -> StorageResult<()> {
        let room = room.clone();
        let members = members.to_vec();
        self.write(move |c| rooms::create_room(c, &room, &members))
            .await
    }

    async fn create_direct_room(
        &self,
        pair_key: &str,
        room: &RoomRecord,
        members: &[MemberRecord],
    ) -> StorageResult<(String, bool)> {
        let pair_key = pair_key.to_owned();
        let room = room.clone();
        let members = members.to_vec();
        self.write(move |c| rooms::create_direct_room(c, &pair_key, &room, &members))
            .await
    }

    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| rooms::room(c, &room_id)).await
    }

    async fn rename_room(&self, room_id: &str, name: &str) -> StorageResult<()> {
        let room_id = room_id.to_owned();
        let name = name.to_owned();
        self.write(move |c| rooms::rename_room(c, &room_id, &name))
            .await
    }

    async fn members(&self, room_id: &str) -> StorageResult<Vec<MemberRecord>> {
        let room_id = room_id.to_owned();
        self.read(move |c| rooms::members(c, &room_id)).await
    }

    async fn member_ids_up_to(&self, room_id: &str, limit: usize) -> StorageResult<Vec<String>> {
        let room_id = room_id.to_owned();
        self.read(move |c| rooms::member_ids_up_to(c, &room_id, limit))
            .await
    }

    async fn member(&self, room_id: &str, user_id: &str) -> StorageResult<Option<MemberRecord>> {
        let room_id = room_id.to_owned();
        let user_id = user_id.to_owned();
        self.read(move |c| rooms::member(c, &room_id, &user_id))
            .await
    }

    async fn put_member(&self, room_id: &str, member: &MemberRecord) -> StorageResult<()> {
        let room_id = room_id.to_owned();
        let member = member.clone();
        self.write(move |c| rooms::put_member(c, &room_id, &member))
            .await
    }

    async fn remove_member(&self, room_id: &str, user_id: &str) -> StorageResult<()> {
        let room_id = room_id.to_owned();
        let user_id = user_id.to_owned();
        self.write(move |c| rooms::remove_member(c, &room_id, &user_id))
            .await
    }

    async fn user_rooms(&self, user_id: &str) -> StorageResult<Vec<String>> {
        let user_id = user_id.to_owned();
        self.read(move |c| rooms::user_rooms(c, &user_id)).await
    }

    async fn commit_messages(
        &self,
        room_id: &str,
        expected_last_seq: u64,
        messages: &[NewMessage],
    ) -> StorageResult<Vec<CommitOutcome>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.to_committer(Job::Messages(CommitJob {
            room_id: room_id.to_owned(),
            expected_last_seq,
            batch: messages.to_vec(),
            reply,
        }))?;
        answer
            .await
            .map_err(|_| crate::StorageError::Internal("the committer dropped a commit".into()))?
    }

    async fn messages(
        &self,
        room_id: &str,
        range: HistoryRange,
    ) -> StorageResult<Vec<StoredMessage>> {
        let room_id = room_id.to_owned();
        self.read(move |c| messages::history(c, &room_id, range))
            .await
    }

    async fn watermarks(&self, user_id: &str, room_id: &str) -> StorageResult<Watermarks> {
        let user_id = user_id.to_owned();
        let room_id = room_id.to_owned();
        self.read(move |c| read_states::watermarks(c, &user_id, &room_id))
            .await
    }

    async fn room_watermarks(&self, room_id: &str) -> StorageResult<Vec<(String, Watermarks)>> {
        let room_id = room_id.to_owned();
        self.read(move |c| read_states::room_watermarks(c, &room_id))
            .await
    }

    async fn raise_watermarks(
        &self,
        user_id: &str,
        room_id: &str,
        marks: Watermarks,
    ) -> StorageResult<()> {
        self.raise_room_watermarks(room_id, &[(user_id.to_owned(), marks)])
            .await
    }

    async fn raise_room_watermarks(
        &self,
        room_id: &str,
        marks: &[(String, Watermarks)],
    ) -> StorageResult<()> {
        if marks.is_empty() {
            return Ok(());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.to_committer(Job::Watermarks(WatermarksJob {
            room_id: room_id.to_owned(),
            marks: marks.to_vec(),
            reply,
        }))?;
        answer.await.map_err(|_| {
            crate::StorageError::Internal("the committer dropped a watermark write".into())
        })?
    }
}

impl EmbeddedStore {
    /// Queues a request for the committer (receipts and messages share its
    /// group transactions, see `committer`).
    fn to_committer(&self, job: Job) -> StorageResult<()> {
        self.commits
            .send(job)
            .map_err(|_| crate::StorageError::Unavailable("the committer has stopped".into()))
    }
}
