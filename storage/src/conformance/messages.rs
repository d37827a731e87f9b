//! Message commits: gapless seqs, idempotency, the head check and the
//! split-owner rule.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Barrier;

use super::support::{all_history, assert_seqs, fill, fresh_id, group_room, message, stored};
use crate::error::StorageError;
use crate::model::{CommitOutcome, NewMessage};
use crate::store::Store;

/// Batches get consecutive seqs from the head; the room's `last_seq`
/// follows; history returns exactly what was committed.
pub async fn commit_gapless(store: &dyn Store) {
    let room_id = group_room(store).await;
    let mut committed = Vec::new();
    let mut head = 0;
    for size in [1usize, 5, 10] {
        committed.extend(fill(store, &room_id, head, size, size).await);
        head += size as u64;
        let r = store
            .room(&room_id)
            .await
            .expect("room")
            .expect("room exists");
        assert_eq!(r.last_seq, head, "last_seq follows the commits");
    }
    let empty = store
        .commit_messages(&room_id, head, &[])
        .await
        .unwrap_or_else(|e| panic!("empty batch at the head failed: {e}"));
    assert!(empty.is_empty(), "an empty batch has no outcomes");
    let history = all_history(store, &room_id).await;
    assert_seqs(&history, 1, 16, "history after three batches");
    assert_eq!(history, committed, "history is exactly what was committed");
    let r = store
        .room(&room_id)
        .await
        .expect("room")
        .expect("room exists");
    assert_eq!(r.last_seq, 16, "an empty batch leaves the head alone");

    // Settling a room (done before a room is served) changes nothing that
    // was committed, and an unknown room is no error.
    store
        .settle_room(&room_id)
        .await
        .unwrap_or_else(|e| panic!("settling a committed room failed: {e}"));
    assert_eq!(all_history(store, &room_id).await, committed);
    store
        .settle_room(&fresh_id())
        .await
        .unwrap_or_else(|e| panic!("settling an unknown room failed: {e}"));
    let next = store
        .commit_messages(&room_id, 16, &[message("after settling")])
        .await
        .unwrap_or_else(|e| panic!("commit after settling failed: {e}"));
    assert_eq!(next[0].message().seq, 17);
}

/// A `client_msg_id` seen before (earlier in the batch or in an earlier
/// batch) comes back as `Duplicate` of the stored message and writes
/// nothing.
pub async fn commit_duplicates(store: &dyn Store) {
    let room_id = group_room(store).await;
    let a = message("first");
    let b = message("second");
    let a_again = NewMessage {
        message_id: fresh_id(),
        body: "first, resent with another body".into(),
        ..a.clone()
    };
    let out = store
        .commit_messages(&room_id, 0, &[a.clone(), b.clone(), a_again])
        .await
        .unwrap_or_else(|e| panic!("commit with an in-batch duplicate failed: {e}"));
    assert_eq!(
        out,
        vec![
            CommitOutcome::Committed(stored(&room_id, 1, &a)),
            CommitOutcome::Committed(stored(&room_id, 2, &b)),
            CommitOutcome::Duplicate(stored(&room_id, 1, &a)),
        ],
        "an in-batch duplicate returns the first copy and takes no seq"
    );

    let b_again = NewMessage {
        message_id: fresh_id(),
        ..b.clone()
    };
    let c = message("third");
    let out = store
        .commit_messages(&room_id, 2, &[b_again, c.clone()])
        .await
        .unwrap_or_else(|e| panic!("commit with an earlier duplicate failed: {e}"));
    assert_eq!(
        out,
        vec![
            CommitOutcome::Duplicate(stored(&room_id, 2, &b)),
            CommitOutcome::Committed(stored(&room_id, 3, &c)),
        ],
        "a duplicate of an earlier batch keeps its seq"
    );

    let out = store
        .commit_messages(&room_id, 3, &[c.clone(), a.clone()])
        .await
        .expect("all-duplicate batch");
    assert_eq!(
        out,
        vec![
            CommitOutcome::Duplicate(stored(&room_id, 3, &c)),
            CommitOutcome::Duplicate(stored(&room_id, 1, &a)),
        ]
    );
    let r = store
        .room(&room_id)
        .await
        .expect("room")
        .expect("room exists");
    assert_eq!(r.last_seq, 3, "duplicates do not move the head");
    let history = all_history(store, &room_id).await;
    assert_eq!(
        history,
        vec![
            stored(&room_id, 1, &a),
            stored(&room_id, 2, &b),
            stored(&room_id, 3, &c)
        ],
        "duplicates write nothing"
    );
}

/// A stale (or future) expected head gives `HeadMoved` and writes nothing.
pub async fn commit_head_moved(store: &dyn Store) {
    let room_id = group_room(store).await;
    let first = fill(store, &room_id, 0, 3, 3).await;
    let x = message("late");
    for expected in [0u64, 2, 7] {
        let res = store
            .commit_messages(&room_id, expected, std::slice::from_ref(&x))
            .await;
        match res {
            Err(StorageError::HeadMoved {
                expected: e,
                actual: 3,
            }) if e == expected => {}
            other => {
                panic!("commit at head {expected} (actual 3) must be HeadMoved, got {other:?}")
            }
        }
    }
    let r = store
        .room(&room_id)
        .await
        .expect("room")
        .expect("room exists");
    assert_eq!(r.last_seq, 3, "a refused commit does not move the head");
    assert_eq!(all_history(store, &room_id).await, first, "nothing written");
    let out = store
        .commit_messages(&room_id, 3, std::slice::from_ref(&x))
        .await
        .expect("commit at the right head");
    assert_eq!(
        out,
        vec![CommitOutcome::Committed(stored(&room_id, 4, &x))],
        "the refused message was not recorded (it commits fresh now)"
    );
}

/// Committing to a room that does not exist is `NotFound`.
pub async fn commit_unknown_room(store: &dyn Store) {
    let res = store
        .commit_messages(&fresh_id(), 0, &[message("nobody home")])
        .await;
    assert!(
        matches!(res, Err(StorageError::NotFound)),
        "commit to an unknown room must be NotFound, got {res:?}"
    );
}

/// Two owners commit to one room on the same head at the same time.
pub async fn split_owner(store: Arc<dyn Store>) {
    split_owner_across(Arc::clone(&store), store).await;
}

/// The split-owner rule between two handles on one database (two nodes that
/// both believe they own a room): over several rounds, both commit a batch
/// on the same head at once. Exactly one wins; the other gets `HeadMoved`
/// with the winner's head; the winner's messages are never overwritten; a
/// message both tried (same `client_msg_id`) keeps one seq when the loser
/// retries on the new head.
pub async fn split_owner_across(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    const ROUNDS: usize = 12;
    let room_id = group_room(&*a).await;
    let mut head = 0u64;
    for round in 0..ROUNDS {
        let shared = message(&format!("round {round}: sent to both owners"));
        let batch_a = vec![
            message(&format!("round {round}: a1")),
            shared.clone(),
            message(&format!("round {round}: a2")),
        ];
        let shared_b = NewMessage {
            message_id: fresh_id(),
            ..shared.clone()
        };
        let batch_b = vec![shared_b, message(&format!("round {round}: b1"))];

        let barrier = Arc::new(Barrier::new(2));
        let spawn = |store: Arc<dyn Store>, batch: Vec<NewMessage>| {
            let barrier = Arc::clone(&barrier);
            let room_id = room_id.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.commit_messages(&room_id, head, &batch).await
            })
        };
        let ta = spawn(Arc::clone(&a), batch_a.clone());
        let tb = spawn(Arc::clone(&b), batch_b.clone());
        let ra = ta.await.expect("committer a panicked");
        let rb = tb.await.expect("committer b panicked");

        let (won, lost, win_batch, lose_batch, loser) = match (ra, rb) {
            (Ok(w), Err(l)) => (w, l, batch_a, batch_b, Arc::clone(&b)),
            (Err(l), Ok(w)) => (w, l, batch_b, batch_a, Arc::clone(&a)),
            (Ok(_), Ok(_)) => {
                panic!(
                    "round {round}: both owners committed on head {head}: split-owner rule broken"
                )
            }
            (Err(x), Err(y)) => panic!("round {round}: both commits failed: {x}; {y}"),
        };
        let win_len = win_batch.len() as u64;
        match lost {
            StorageError::HeadMoved { expected, actual }
                if expected == head && actual == head + win_len => {}
            other => panic!(
                "round {round}: loser must get HeadMoved {{ expected: {head}, actual: {} }}, got {other:?}",
                head + win_len
            ),
        }
        let want: Vec<CommitOutcome> = win_batch
            .iter()
            .enumerate()
            .map(|(i, m)| CommitOutcome::Committed(stored(&room_id, head + 1 + i as u64, m)))
            .collect();
        assert_eq!(won, want, "round {round}: the winner's outcomes");
        head += win_len;

        // The loser reloads the head and retries its batch: the shared
        // message is a duplicate with the winner's seq, the rest is new.
        let retry = loser
            .commit_messages(&room_id, head, &lose_batch)
            .await
            .unwrap_or_else(|e| panic!("round {round}: loser's retry failed: {e}"));
        let shared_won = won
            .iter()
            .map(CommitOutcome::message)
            .find(|m| m.client_msg_id == shared.client_msg_id)
            .cloned()
            .expect("the winner committed the shared message");
        let mut next = head;
        for (o, m) in retry.iter().zip(&lose_batch) {
            if m.client_msg_id == shared.client_msg_id {
                assert_eq!(
                    o,
                    &CommitOutcome::Duplicate(shared_won.clone()),
                    "round {round}: a message both owners tried keeps one seq"
                );
            } else {
                next += 1;
                assert_eq!(o, &CommitOutcome::Committed(stored(&room_id, next, m)));
            }
        }
        head = next;
    }

    let history = all_history(&*a, &room_id).await;
    assert_seqs(&history, 1, head, "split-owner history is gapless");
    let cids: HashSet<&str> = history.iter().map(|m| m.client_msg_id.as_str()).collect();
    assert_eq!(cids.len(), history.len(), "no client_msg_id has two seqs");
    let mids: HashSet<&str> = history.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(mids.len(), history.len(), "no message stored twice");
    assert_eq!(
        all_history(&*b, &room_id).await,
        history,
        "both handles see the same history"
    );
}

/// Bodies (and names, ids) with SQL metacharacters and tricky Unicode are
/// stored byte for byte.
pub async fn bodies_byte_for_byte(store: &dyn Store) {
    let bodies: Vec<String> = vec![
        "'; DROP TABLE messages; --".into(),
        "Robert'); DROP TABLE users;--".into(),
        "\" OR 1=1 -- ".into(),
        "?1 ?2 :name @var $x %s {} \\ \\\\ \\0".into(),
        "100% _wild_ LIKE 'a%' ESCAPE '\\'".into(),
        "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈".into(),
        "مرحبا بالعالم \u{200F}שלום עולם\u{202E}reversed\u{202C}".into(),
        "e\u{0301} a\u{0308}\u{0323} Z\u{0351}\u{0337}\u{0334}".into(),
        "line1\nline2\r\n\ttabbed\u{000B}\u{000C}".into(),
        "\u{FEFF}bom zero\u{200B}width\u{00A0}nbsp".into(),
        "  padded  ".into(),
        "NULL".into(),
        "\u{10FFFF}\u{E000}\u{FFFD}".into(),
        "日本語のテキスト 中文 한국어".into(),
        "ü".repeat(4000),
    ];
    let room_id = group_room(store).await;
    let msgs: Vec<NewMessage> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| NewMessage {
            sender_name: format!("o'brien \"{i}\" 🚀"),
            client_msg_id: format!("cmid'{i}; --{}", fresh_id()),
            ..message(body)
        })
        .collect();
    let out = store
        .commit_messages(&room_id, 0, &msgs)
        .await
        .unwrap_or_else(|e| panic!("commit of tricky bodies failed: {e}"));
    assert_eq!(out.len(), msgs.len());
    let history = all_history(store, &room_id).await;
    assert_eq!(history.len(), msgs.len(), "every tricky body stored");
    for (i, (got, want)) in history.iter().zip(&msgs).enumerate() {
        assert_eq!(
            got.body.as_bytes(),
            want.body.as_bytes(),
            "body {i} must be stored byte for byte"
        );
        assert_eq!(got, &stored(&room_id, i as u64 + 1, want), "message {i}");
    }
    let again = store
        .commit_messages(&room_id, msgs.len() as u64, &msgs)
        .await
        .expect("resend of tricky messages");
    for (i, (o, want)) in again.iter().zip(&msgs).enumerate() {
        assert_eq!(
            o,
            &CommitOutcome::Duplicate(stored(&room_id, i as u64 + 1, want)),
            "tricky client_msg_id {i} is found again"
        );
    }
}
