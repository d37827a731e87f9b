//! [`Store`] for [`ScyllaStore`]: each call goes to its area module.

use async_trait::async_trait;

use super::{binds, commit, messages, read_states, rooms, tokens, users, ScyllaStore};
use crate::error::StorageResult;
use crate::model::{
    CommitOutcome, HistoryRange, MemberRecord, NewMessage, RefreshTokenRecord, RoomRecord,
    StoredMessage, UserRecord, Watermarks,
};
use crate::store::Store;

#[async_trait]
impl Store for ScyllaStore {
    async fn ping(&self) -> StorageResult<()> {
        let _: Option<binds::VersionRow> = self.x.one(&binds::ping()).await?;
        Ok(())
    }

    fn read_parallelism(&self) -> usize {
        super::REQUESTS_IN_FLIGHT
    }

    async fn create_user(&self, user: &UserRecord) -> StorageResult<()> {
        users::create_user(&self.x, user).await
    }

    async fn user_by_name(&self, username: &str) -> StorageResult<Option<UserRecord>> {
        users::user_by_name(&self.x, username).await
    }

    async fn user_by_id(&self, user_id: &str) -> StorageResult<Option<UserRecord>> {
        users::user_by_id(&self.x, user_id).await
    }

    async fn set_last_seen(&self, user_id: &str, at: i64) -> StorageResult<()> {
        users::set_last_seen(&self.x, user_id, at).await
    }

    async fn put_refresh_token(&self, token: &RefreshTokenRecord) -> StorageResult<()> {
        tokens::put_refresh_token(&self.x, token).await
    }

    async fn take_refresh_token(
        &self,
        token_hash: &str,
    ) -> StorageResult<Option<RefreshTokenRecord>> {
        tokens::take_refresh_token(&self.x, token_hash).await
    }

    async fn create_room(&self, room: &RoomRecord, members: &[MemberRecord]) -> StorageResult<()> {
        rooms::create_room(&self.x, room, members).await
    }

    async fn create_direct_room(
        &self,
        pair_key: &str,
        room: &RoomRecord,
        members: &[MemberRecord],
    ) -> StorageResult<(String, bool)> {
        rooms::create_direct_room(&self.x, pair_key, room, members).await
    }

    async fn room(&self, room_id: &str) -> StorageResult<Option<RoomRecord>> {
        rooms::room(&self.x, room_id).await
    }

    async fn rename_room(&self, room_id: &str, name: &str) -> StorageResult<()> {
        rooms::rename_room(&self.x, room_id, name).await
    }

    async fn members(&self, room_id: &str) -> StorageResult<Vec<MemberRecord>> {
        rooms::members(&self.x, room_id).await
    }

    async fn member_ids_up_to(&self, room_id: &str, limit: usize) -> StorageResult<Vec<String>> {
        rooms::member_ids_up_to(&self.x, room_id, limit).await
    }

    async fn member(&self, room_id: &str, user_id: &str) -> StorageResult<Option<MemberRecord>> {
        rooms::member(&self.x, room_id, user_id).await
    }

    async fn put_member(&self, room_id: &str, member: &MemberRecord) -> StorageResult<()> {
        rooms::put_member(&self.x, room_id, member).await
    }

    async fn remove_member(&self, room_id: &str, user_id: &str) -> StorageResult<()> {
        rooms::remove_member(&self.x, room_id, user_id).await
    }

    async fn user_rooms(&self, user_id: &str) -> StorageResult<Vec<String>> {
        rooms::user_rooms(&self.x, user_id).await
    }

    async fn settle_room(&self, room_id: &str) -> StorageResult<()> {
        commit::settle(&self.x, &self.heads, room_id).await
    }

    async fn commit_messages(
        &self,
        room_id: &str,
        expected_last_seq: u64,
        messages: &[NewMessage],
    ) -> StorageResult<Vec<CommitOutcome>> {
        commit::commit(&self.x, &self.heads, room_id, expected_last_seq, messages).await
    }

    async fn messages(
        &self,
        room_id: &str,
        range: HistoryRange,
    ) -> StorageResult<Vec<StoredMessage>> {
        messages::history(&self.x, room_id, range).await
    }

    async fn watermarks(&self, user_id: &str, room_id: &str) -> StorageResult<Watermarks> {
        read_states::watermarks(&self.x, user_id, room_id).await
    }

    async fn room_watermarks(&self, room_id: &str) -> StorageResult<Vec<(String, Watermarks)>> {
        read_states::room_watermarks(&self.x, room_id).await
    }

    async fn raise_watermarks(
        &self,
        user_id: &str,
        room_id: &str,
        marks: Watermarks,
    ) -> StorageResult<()> {
        read_states::raise(&self.x, user_id, room_id, marks).await
    }

    async fn raise_room_watermarks(
        &self,
        room_id: &str,
        marks: &[(String, Watermarks)],
    ) -> StorageResult<()> {
        read_states::raise_many(&self.x, room_id, marks).await
    }
}
