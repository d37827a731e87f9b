//! Read states: watermarks only ever rise.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::support::fresh_id;
use crate::model::Watermarks;
use crate::store::Store;

fn marks(delivered_seq: u64, read_seq: u64) -> Watermarks {
    Watermarks {
        delivered_seq,
        read_seq,
    }
}

/// Unknown read states are zeros; raising never lowers either value.
pub async fn watermarks_never_lowered(store: &dyn Store) {
    let (user, room) = (fresh_id(), fresh_id());
    let got = store.watermarks(&user, &room).await.expect("watermarks");
    assert_eq!(got, Watermarks::default(), "no read state means zeros");
    let steps = [
        (marks(5, 3), marks(5, 3)),
        (marks(2, 4), marks(5, 4)),
        (marks(0, 0), marks(5, 4)),
        (marks(10, 1), marks(10, 4)),
        (marks(10, 10), marks(10, 10)),
    ];
    for (raise, want) in steps {
        store
            .raise_watermarks(&user, &room, raise)
            .await
            .unwrap_or_else(|e| panic!("raise_watermarks {raise:?} failed: {e}"));
        let got = store.watermarks(&user, &room).await.expect("watermarks");
        assert_eq!(got, want, "after raising with {raise:?}");
    }
    let other_room = store
        .watermarks(&user, &fresh_id())
        .await
        .expect("watermarks");
    assert_eq!(
        other_room,
        Watermarks::default(),
        "read states are per room"
    );
}

/// 16 concurrent raises end at the maximum of each value.
pub async fn concurrent_watermarks(store: Arc<dyn Store>) {
    const N: u64 = 16;
    let (user, room) = (fresh_id(), fresh_id());
    let barrier = Arc::new(Barrier::new(N as usize));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (store, barrier) = (Arc::clone(&store), Arc::clone(&barrier));
        let (user, room) = (user.clone(), room.clone());
        // The two values peak in different tasks.
        let m = marks((i * 7) % N + 100, ((i + 11) * 5) % N);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.raise_watermarks(&user, &room, m).await
        }));
    }
    for t in tasks {
        t.await
            .expect("raise task panicked")
            .unwrap_or_else(|e| panic!("concurrent raise_watermarks failed: {e}"));
    }
    let want = marks(
        (0..N).map(|i| (i * 7) % N + 100).max().unwrap_or(0),
        (0..N).map(|i| ((i + 11) * 5) % N).max().unwrap_or(0),
    );
    let got = store.watermarks(&user, &room).await.expect("watermarks");
    assert_eq!(got, want, "concurrent raises keep the maximum");
}

/// `room_watermarks` lists every stored read state of the room.
pub async fn room_watermarks(store: &dyn Store) {
    let room = fresh_id();
    let (u1, u2) = (fresh_id(), fresh_id());
    store
        .raise_watermarks(&u1, &room, marks(7, 5))
        .await
        .expect("raise u1");
    store
        .raise_watermarks(&u2, &room, marks(3, 0))
        .await
        .expect("raise u2");
    store
        .raise_watermarks(&u1, &fresh_id(), marks(99, 99))
        .await
        .expect("raise u1 elsewhere");
    let mut got = store.room_watermarks(&room).await.expect("room_watermarks");
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![(u1, marks(7, 5)), (u2, marks(3, 0))];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "room_watermarks lists the room's read states");
    assert!(
        store
            .room_watermarks(&fresh_id())
            .await
            .expect("room_watermarks")
            .is_empty(),
        "a room without read states has none"
    );
}

/// `raise_room_watermarks` raises several users at once with the same rules
/// as one by one: per user the maximum of each value (a user may be listed
/// twice), never lowering what is stored, only in that room.
pub async fn raise_room_watermarks_together(store: &dyn Store) {
    let room = fresh_id();
    let (u1, u2, u3) = (fresh_id(), fresh_id(), fresh_id());
    store
        .raise_watermarks(&u1, &room, marks(9, 2))
        .await
        .expect("raise u1");
    store
        .raise_room_watermarks(&room, &[])
        .await
        .expect("raising nobody is fine");
    store
        .raise_room_watermarks(
            &room,
            &[
                (u1.clone(), marks(4, 6)),
                (u2.clone(), marks(5, 1)),
                (u2.clone(), marks(3, 4)),
                (u3.clone(), marks(0, 0)),
            ],
        )
        .await
        .expect("raise_room_watermarks");
    for (user, want) in [(&u1, marks(9, 6)), (&u2, marks(5, 4)), (&u3, marks(0, 0))] {
        let got = store.watermarks(user, &room).await.expect("watermarks");
        assert_eq!(got, want, "after the batch raise");
    }
    let other = store
        .watermarks(&u2, &fresh_id())
        .await
        .expect("watermarks");
    assert_eq!(other, Watermarks::default(), "only that room is raised");
}
