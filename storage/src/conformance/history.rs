//! History reads: paging forward and backward, windows, and the bucket
//! boundary of partitioned backends.

use super::support::{all_history, assert_seqs, fill, fresh_id, group_room};
use crate::model::{HistoryRange, StoredMessage};
use crate::store::Store;

/// Messages committed by [`bucket_boundary`]: enough to cross seq 16384
/// (`seq >> 14` bucket 0 to bucket 1) with a margin.
pub const BUCKET_BOUNDARY_MESSAGES: usize = 16_500;

async fn after(
    store: &dyn Store,
    room_id: &str,
    after_seq: u64,
    before_seq: Option<u64>,
    limit: u32,
) -> Vec<StoredMessage> {
    let range = HistoryRange::After {
        after_seq,
        before_seq,
        limit,
    };
    store
        .messages(room_id, range)
        .await
        .unwrap_or_else(|e| panic!("history {range:?} failed: {e}"))
}

async fn before(
    store: &dyn Store,
    room_id: &str,
    before_seq: u64,
    limit: u32,
) -> Vec<StoredMessage> {
    let range = HistoryRange::Before { before_seq, limit };
    store
        .messages(room_id, range)
        .await
        .unwrap_or_else(|e| panic!("history {range:?} failed: {e}"))
}

/// Pages forward with `After` from `from` (exclusive) to the end and
/// backward with `Before` from `to + 1` down to `from + 1`, checking every
/// page is ascending, gapless and matches `committed` (indexed by seq - 1).
async fn page_both_ways(
    store: &dyn Store,
    room_id: &str,
    committed: &[StoredMessage],
    from: u64,
    to: u64,
    limit: u32,
) {
    let mut cursor = from;
    loop {
        let page = after(store, room_id, cursor, None, limit).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= limit as usize, "page longer than limit");
        let last = cursor + page.len() as u64;
        assert_seqs(&page, cursor + 1, last, "forward page");
        cursor = last;
    }
    assert_eq!(
        cursor, to,
        "forward paging from {from} must end at the head"
    );

    let mut cursor = to + 1;
    let mut pages = 0usize;
    while cursor > from + 1 {
        let page = before(store, room_id, cursor, limit).await;
        assert!(!page.is_empty(), "backward page before {cursor} is empty");
        assert!(page.len() <= limit as usize, "page longer than limit");
        let first = cursor - page.len() as u64;
        assert_seqs(&page, first, cursor - 1, "backward page");
        for m in &page {
            let idx = usize::try_from(m.seq - 1).unwrap_or(usize::MAX);
            assert_eq!(Some(m), committed.get(idx), "stored message {}", m.seq);
        }
        cursor = first;
        pages += 1;
    }
    assert!(pages > 0 || from == to, "backward paging read nothing");
}

/// Commits 450 messages in uneven batches and pages through them forward
/// and backward; checks windows, limits and the edges.
pub async fn history_paging(store: &dyn Store) {
    let room_id = group_room(store).await;
    let committed = fill(store, &room_id, 0, 450, 37).await;
    assert_eq!(
        all_history(store, &room_id).await,
        committed,
        "full history"
    );
    page_both_ways(store, &room_id, &committed, 0, 450, 50).await;
    page_both_ways(store, &room_id, &committed, 0, 450, 64).await;

    let w = after(store, &room_id, 100, Some(111), 50).await;
    assert_seqs(&w, 101, 110, "After 100 before 111");
    let w = after(store, &room_id, 100, Some(111), 5).await;
    assert_seqs(&w, 101, 105, "After 100 before 111 limit 5");
    let w = after(store, &room_id, 449, None, 200).await;
    assert_seqs(&w, 450, 450, "After 449");
    assert!(
        after(store, &room_id, 450, None, 10).await.is_empty(),
        "After head"
    );
    assert!(
        after(store, &room_id, 0, Some(1), 10).await.is_empty(),
        "before 1"
    );
    assert!(
        after(store, &room_id, 10, Some(11), 10).await.is_empty(),
        "empty window"
    );
    assert!(
        after(store, &room_id, 0, None, 0).await.is_empty(),
        "limit 0"
    );
    let w = after(store, &room_id, 440, Some(u64::MAX), 100).await;
    assert_seqs(&w, 441, 450, "After 440 before u64::MAX");

    let w = before(store, &room_id, 5, 10).await;
    assert_seqs(&w, 1, 4, "Before 5");
    let w = before(store, &room_id, 300, 3).await;
    assert_seqs(&w, 297, 299, "Before 300 limit 3");
    assert!(before(store, &room_id, 1, 10).await.is_empty(), "Before 1");
    assert!(before(store, &room_id, 100, 0).await.is_empty(), "limit 0");
    let w = before(store, &room_id, u64::MAX, 10).await;
    assert_seqs(&w, 441, 450, "Before u64::MAX (the latest page)");
    let w = before(store, &room_id, 1_000_000, 2).await;
    assert_seqs(&w, 449, 450, "Before past the head");

    let unknown = fresh_id();
    assert!(
        after(store, &unknown, 0, None, 10).await.is_empty(),
        "unknown room"
    );
    assert!(
        before(store, &unknown, 100, 10).await.is_empty(),
        "unknown room"
    );
}

/// Commits [`BUCKET_BOUNDARY_MESSAGES`] messages in batches of 500 and reads
/// across seq 16384, where a backend partitioning by `seq >> 14` moves to
/// the next partition.
pub async fn bucket_boundary(store: &dyn Store) {
    let room_id = group_room(store).await;
    let n = BUCKET_BOUNDARY_MESSAGES;
    let committed = fill(store, &room_id, 0, n, 500).await;
    let head = n as u64;
    let edge = 1u64 << 14;

    let w = after(store, &room_id, edge - 10, None, 20).await;
    assert_seqs(&w, edge - 9, edge + 10, "After across the bucket edge");
    let w = after(store, &room_id, edge - 2, Some(edge + 2), 10).await;
    assert_seqs(&w, edge - 1, edge + 1, "window around the bucket edge");
    let w = after(store, &room_id, edge - 1, None, 1).await;
    assert_seqs(&w, edge, edge, "first message of bucket 1");
    let w = before(store, &room_id, edge + 10, 20).await;
    assert_seqs(&w, edge - 10, edge + 9, "Before across the bucket edge");
    let w = before(store, &room_id, edge, 1).await;
    assert_seqs(&w, edge - 1, edge - 1, "last message of bucket 0");
    let w = after(store, &room_id, 0, None, 3).await;
    assert_seqs(&w, 1, 3, "start of bucket 0");
    let w = before(store, &room_id, u64::MAX, 3).await;
    assert_seqs(&w, head - 2, head, "latest page");

    page_both_ways(store, &room_id, &committed, edge - 700, head, 200).await;
    let all = all_history(store, &room_id).await;
    assert_seqs(&all, 1, head, "full history across buckets");
    assert_eq!(all, committed, "full history matches the commits");
}
