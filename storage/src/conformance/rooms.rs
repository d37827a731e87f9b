//! Rooms, members, users' room lists and direct rooms.

use std::sync::Arc;

use futures_util::stream::{self, StreamExt};
use tokio::sync::Barrier;

use super::support::{fresh_id, member, now_ms, room, user};
use crate::error::StorageError;
use crate::model::{MemberRecord, UserRecord};
use crate::store::Store;

/// The backend's `read_parallelism` is at least 1, and that many reads of
/// different rooms in flight at once (as `GET /rooms` and presence keep)
/// each get their own room's members.
pub async fn parallel_reads(store: &dyn Store) {
    let at_once = store.read_parallelism();
    assert!(at_once >= 1, "read_parallelism must be at least 1");
    let owner = user();
    let mut rooms = Vec::new();
    for _ in 0..at_once * 3 {
        let r = room("group", "parallel");
        let guest = user();
        store
            .create_room(
                &r,
                &[member(&owner, "owner", 1), member(&guest, "member", 2)],
            )
            .await
            .expect("create_room");
        rooms.push((r.room_id, guest.user_id));
    }
    let read: Vec<_> = stream::iter(&rooms)
        .map(|(room_id, guest)| async move { (guest, store.members(room_id).await) })
        .buffer_unordered(at_once)
        .collect()
        .await;
    assert_eq!(read.len(), rooms.len());
    for (guest, members) in read {
        let mut ids: Vec<String> = members
            .expect("members")
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        ids.sort();
        let mut want = vec![owner.user_id.clone(), guest.clone()];
        want.sort();
        assert_eq!(ids, want, "a parallel read got another room's members");
    }
    let listed = store.user_rooms(&owner.user_id).await.expect("user_rooms");
    assert_eq!(listed.len(), rooms.len());
}

/// Create, read, rename, list, change and remove members.
pub async fn rooms_and_members(store: &dyn Store) {
    let (a, b, c) = (user(), user(), user());
    let mut r = room("group", "Room 'one'; --");
    r.last_seq = 99; // ignored on create
    let ma = member(&a, "owner", 1_000);
    let mb = member(&b, "member", 1_000);
    let mc = member(&c, "member", 500);
    store
        .create_room(&r, &[ma.clone(), mb.clone(), mc.clone()])
        .await
        .unwrap_or_else(|e| panic!("create_room failed: {e}"));

    let got = store
        .room(&r.room_id)
        .await
        .expect("room")
        .expect("room exists");
    assert_eq!(got.room_id, r.room_id);
    assert_eq!(got.kind, "group");
    assert_eq!(got.name, r.name, "name stored byte for byte");
    assert_eq!(got.created_at, r.created_at);
    assert_eq!(got.last_seq, 0, "a new room starts at last_seq 0");

    let dup = store.create_room(&r, &[]).await;
    assert!(
        matches!(dup, Err(StorageError::AlreadyExists)),
        "creating a room with a taken id must give AlreadyExists, got {dup:?}"
    );
    assert_eq!(
        store.room(&fresh_id()).await.expect("room"),
        None,
        "unknown room"
    );

    // Members by join time, then user id.
    let mut want = vec![mc.clone(), ma.clone(), mb.clone()];
    want.sort_by(|x, y| (x.joined_at, &x.user_id).cmp(&(y.joined_at, &y.user_id)));
    assert_eq!(
        store.members(&r.room_id).await.expect("members"),
        want,
        "members ordered by joined_at then user_id"
    );
    assert_eq!(
        store.member(&r.room_id, &a.user_id).await.expect("member"),
        Some(ma.clone())
    );
    assert_eq!(
        store.member(&r.room_id, &fresh_id()).await.expect("member"),
        None,
        "a stranger is not a member"
    );
    assert!(
        store
            .members(&fresh_id())
            .await
            .expect("members")
            .is_empty(),
        "unknown room has no members"
    );
    for u in [&a, &b, &c] {
        assert_eq!(
            store.user_rooms(&u.user_id).await.expect("user_rooms"),
            vec![r.room_id.clone()],
            "create_room adds each member's user-rooms entry"
        );
    }

    // Rename.
    let new_name = "Ünïcode 🚀 \"name\"";
    store
        .rename_room(&r.room_id, new_name)
        .await
        .unwrap_or_else(|e| panic!("rename_room failed: {e}"));
    let got = store
        .room(&r.room_id)
        .await
        .expect("room")
        .expect("room exists");
    assert_eq!(got.name, new_name, "rename stored");
    let res = store.rename_room(&fresh_id(), "x").await;
    assert!(
        matches!(res, Err(StorageError::NotFound)),
        "renaming an unknown room must give NotFound, got {res:?}"
    );

    // Add a member, change a role.
    let d = user();
    let md = member(&d, "member", 2_000);
    store
        .put_member(&r.room_id, &md)
        .await
        .expect("put_member add");
    assert_eq!(
        store.member(&r.room_id, &d.user_id).await.expect("member"),
        Some(md.clone())
    );
    assert_eq!(
        store.user_rooms(&d.user_id).await.expect("user_rooms"),
        vec![r.room_id.clone()],
        "put_member adds the user-rooms entry"
    );
    let promoted = MemberRecord {
        role: "admin".into(),
        ..mb.clone()
    };
    store
        .put_member(&r.room_id, &promoted)
        .await
        .expect("put_member role change");
    assert_eq!(
        store.member(&r.room_id, &b.user_id).await.expect("member"),
        Some(promoted.clone()),
        "role changed"
    );
    let members = store.members(&r.room_id).await.expect("members");
    assert_eq!(members.len(), 4, "a role change adds no member row");
    assert_eq!(
        members.iter().filter(|m| m.user_id == b.user_id).count(),
        1,
        "one row per member"
    );

    // Remove.
    store
        .remove_member(&r.room_id, &c.user_id)
        .await
        .unwrap_or_else(|e| panic!("remove_member failed: {e}"));
    assert_eq!(
        store.member(&r.room_id, &c.user_id).await.expect("member"),
        None
    );
    assert!(
        store
            .user_rooms(&c.user_id)
            .await
            .expect("user_rooms")
            .is_empty(),
        "remove_member removes the user-rooms entry"
    );
    store
        .remove_member(&r.room_id, &c.user_id)
        .await
        .expect("removing an absent member is not an error");
    store
        .remove_member(&r.room_id, &fresh_id())
        .await
        .expect("removing a stranger is not an error");
    let ids: Vec<String> = store
        .members(&r.room_id)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert!(!ids.contains(&c.user_id), "removed member not listed");
    assert_eq!(ids.len(), 3);

    // A user in two rooms.
    let r2 = room("group", "second");
    store
        .create_room(&r2, &[member(&a, "member", now_ms())])
        .await
        .expect("create second room");
    let mut got = store.user_rooms(&a.user_id).await.expect("user_rooms");
    got.sort();
    let mut want = vec![r.room_id.clone(), r2.room_id.clone()];
    want.sort();
    assert_eq!(got, want, "user_rooms lists every room of the user");
    assert!(
        store
            .user_rooms(&fresh_id())
            .await
            .expect("user_rooms")
            .is_empty(),
        "unknown user has no rooms"
    );
}

fn pair(x: &UserRecord, y: &UserRecord) -> (String, Vec<MemberRecord>) {
    let mut ids = [x.user_id.clone(), y.user_id.clone()];
    ids.sort();
    let now = now_ms();
    (
        ids.join(":"),
        vec![member(x, "member", now), member(y, "member", now)],
    )
}

/// A pair's direct room is created once; later calls return it.
pub async fn direct_room_idempotent(store: &dyn Store) {
    let (x, y) = (user(), user());
    let (key, members) = pair(&x, &y);
    let first = room("direct", "");
    let (id, created) = store
        .create_direct_room(&key, &first, &members)
        .await
        .unwrap_or_else(|e| panic!("create_direct_room failed: {e}"));
    assert_eq!((id.as_str(), created), (first.room_id.as_str(), true));

    let second = room("direct", "");
    let (id2, created2) = store
        .create_direct_room(&key, &second, &members)
        .await
        .expect("create_direct_room again");
    assert_eq!(id2, first.room_id, "same pair, same room");
    assert!(!created2, "the second call must not create");
    assert_eq!(
        store.room(&second.room_id).await.expect("room"),
        None,
        "the unused candidate room must not exist"
    );
    let got = store
        .room(&id)
        .await
        .expect("room")
        .expect("direct room exists");
    assert_eq!(got.kind, "direct");
    assert_eq!(store.members(&id).await.expect("members").len(), 2);
    for u in [&x, &y] {
        assert_eq!(
            store.user_rooms(&u.user_id).await.expect("user_rooms"),
            vec![id.clone()]
        );
    }

    // Another pair gets another room.
    let z = user();
    let (key2, members2) = pair(&x, &z);
    let third = room("direct", "");
    let (id3, created3) = store
        .create_direct_room(&key2, &third, &members2)
        .await
        .expect("create_direct_room other pair");
    assert!(
        created3 && id3 == third.room_id,
        "a new pair gets its own room"
    );
}

/// 8 concurrent direct-room creations for one pair.
pub async fn concurrent_direct_room(store: Arc<dyn Store>) {
    concurrent_direct_room_across(&[store]).await;
}

/// 8 concurrent direct-room creations for one pair over `stores`: all get
/// the same room id, exactly one reports it created it, and no other
/// candidate room exists.
pub async fn concurrent_direct_room_across(stores: &[Arc<dyn Store>]) {
    assert!(!stores.is_empty(), "need at least one store");
    const N: usize = 8;
    let (x, y) = (user(), user());
    let (key, members) = pair(&x, &y);
    let barrier = Arc::new(Barrier::new(N));
    let mut candidates = Vec::with_capacity(N);
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let store = Arc::clone(&stores[i % stores.len()]);
        let barrier = Arc::clone(&barrier);
        let r = room("direct", "");
        candidates.push(r.room_id.clone());
        let (key, members) = (key.clone(), members.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.create_direct_room(&key, &r, &members).await
        }));
    }
    let mut results = Vec::with_capacity(N);
    for t in tasks {
        let res = t.await.expect("direct room task panicked");
        results.push(res.unwrap_or_else(|e| panic!("concurrent create_direct_room: {e}")));
    }
    let id = results[0].0.clone();
    assert!(
        results.iter().all(|(r, _)| *r == id),
        "all concurrent calls must return the same room: {results:?}"
    );
    assert_eq!(
        results.iter().filter(|(_, created)| *created).count(),
        1,
        "exactly one concurrent call creates the room"
    );
    assert!(
        candidates.contains(&id),
        "the room is one of the candidates"
    );
    for c in candidates.iter().filter(|c| **c != id) {
        assert_eq!(
            stores[0].room(c).await.expect("room"),
            None,
            "losing candidate {c} must not exist"
        );
    }
    for u in [&x, &y] {
        assert_eq!(
            stores[0].user_rooms(&u.user_id).await.expect("user_rooms"),
            vec![id.clone()],
            "each member has exactly the one direct room"
        );
    }
}

/// Member ids up to a limit: all of a small room, exactly the limit of a
/// larger one, each a real member and none twice; nothing for an unknown
/// room or a limit of 0.
pub async fn member_ids_up_to(store: &dyn Store) {
    let users: Vec<_> = (0..6).map(|_| user()).collect();
    let members: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| member(u, if i == 0 { "owner" } else { "member" }, i as i64))
        .collect();
    let r = room("group", "limited");
    store
        .create_room(&r, &members)
        .await
        .unwrap_or_else(|e| panic!("create_room failed: {e}"));
    let mut all: Vec<String> = users.iter().map(|u| u.user_id.clone()).collect();
    all.sort();

    for limit in [6, 7, 1_000, usize::MAX] {
        let mut got = store
            .member_ids_up_to(&r.room_id, limit)
            .await
            .expect("member ids");
        got.sort();
        assert_eq!(got, all, "a limit of {limit} gives every member of 6");
    }
    for limit in [1, 5] {
        let mut got = store
            .member_ids_up_to(&r.room_id, limit)
            .await
            .expect("member ids");
        assert_eq!(got.len(), limit, "exactly the limit of a larger room");
        got.sort();
        got.dedup();
        assert_eq!(got.len(), limit, "no member twice");
        assert!(got.iter().all(|id| all.contains(id)), "only members");
    }
    assert!(store
        .member_ids_up_to(&r.room_id, 0)
        .await
        .expect("member ids")
        .is_empty());
    assert!(store
        .member_ids_up_to(&fresh_id(), 10)
        .await
        .expect("member ids")
        .is_empty());
    // A member who left is not counted.
    store
        .remove_member(&r.room_id, &users[5].user_id)
        .await
        .expect("remove member");
    assert_eq!(
        store
            .member_ids_up_to(&r.room_id, 10)
            .await
            .expect("member ids")
            .len(),
        5
    );
}
