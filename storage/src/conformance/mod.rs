//! Conformance suite: the behaviour every [`Store`] backend must show.
//!
//! Each function exercises one area against a live store and panics with a
//! clear message when the backend misbehaves (it is test support code, meant
//! to be called from a backend's integration tests). Every function uses
//! fresh random ids and usernames, so the suite can run again and again
//! against the same persistent database (a long-lived ScyllaDB keyspace,
//! say) and several runs can share one store at the same time.
//!
//! Functions that need concurrency take `Arc<dyn Store>`; their `_across`
//! variants spread the concurrent calls over several stores that share one
//! database (e.g. two processes' handles on one embedded file), which is how
//! the split-owner rule is proven between two "nodes".
//!
//! Behaviour pinned here beyond the trait's wording: `rename_room` of an
//! unknown room is `NotFound`; history reads of an unknown room are empty;
//! a `limit` of 0 returns nothing; history bounds up to `u64::MAX` are
//! accepted (as "no bound"); an empty commit batch at the right head
//! succeeds with no outcomes.
//!
//! [`Store`]: crate::Store

mod history;
mod messages;
mod read_states;
mod rooms;
mod support;
mod users;

use std::sync::Arc;

use crate::store::Store;

pub use history::{bucket_boundary, history_paging, BUCKET_BOUNDARY_MESSAGES};
pub use messages::{
    bodies_byte_for_byte, commit_duplicates, commit_gapless, commit_head_moved,
    commit_unknown_room, split_owner, split_owner_across,
};
pub use read_states::{
    concurrent_watermarks, raise_room_watermarks_together, room_watermarks,
    watermarks_never_lowered,
};
pub use rooms::{
    concurrent_direct_room, concurrent_direct_room_across, direct_room_idempotent,
    member_ids_up_to, parallel_reads, rooms_and_members,
};
/// Record builders, for other crates' tests that need rows in a real store.
pub use support::{member, room, user};
pub use users::{
    concurrent_registration, concurrent_registration_across, concurrent_token_take, last_seen,
    ping, refresh_tokens, username_conflict, users_create_and_lookup,
};

/// Runs the whole suite, including the bucket-boundary test (which commits
/// [`BUCKET_BOUNDARY_MESSAGES`] messages).
pub async fn run_all(store: Arc<dyn Store>) {
    run_all_with(store, true).await;
}

/// Runs the whole suite; `heavy` includes the bucket-boundary test.
pub async fn run_all_with(store: Arc<dyn Store>, heavy: bool) {
    let s: &dyn Store = &*store;
    ping(s).await;

    users_create_and_lookup(s).await;
    username_conflict(s).await;
    concurrent_registration(Arc::clone(&store)).await;
    last_seen(s).await;
    refresh_tokens(s).await;
    concurrent_token_take(Arc::clone(&store)).await;

    rooms_and_members(s).await;
    member_ids_up_to(s).await;
    parallel_reads(s).await;
    direct_room_idempotent(s).await;
    concurrent_direct_room(Arc::clone(&store)).await;

    commit_gapless(s).await;
    commit_duplicates(s).await;
    commit_head_moved(s).await;
    commit_unknown_room(s).await;
    split_owner(Arc::clone(&store)).await;
    bodies_byte_for_byte(s).await;

    history_paging(s).await;
    if heavy {
        bucket_boundary(s).await;
    }

    watermarks_never_lowered(s).await;
    concurrent_watermarks(Arc::clone(&store)).await;
    room_watermarks(s).await;
    raise_room_watermarks_together(s).await;
}
