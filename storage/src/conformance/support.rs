//! Helpers shared by the suite: fresh ids and sample records.

use std::time::{SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use crate::model::{HistoryRange, MemberRecord, NewMessage, RoomRecord, StoredMessage, UserRecord};
use crate::store::Store;

/// A fresh id (UUIDv7, hyphenated), unique across runs.
pub(crate) fn fresh_id() -> String {
    Uuid::now_v7().to_string()
}

/// A fresh valid username (`c` + 31 hex digits: lowercase, 32 chars).
pub(crate) fn fresh_username() -> String {
    let hex = Uuid::now_v7().simple().to_string();
    // The first 12 digits are the time; keep them and most random digits.
    format!("c{}", hex.get(..31).unwrap_or(&hex))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A user record with a fresh id and name.
pub fn user() -> UserRecord {
    UserRecord {
        user_id: fresh_id(),
        username: fresh_username(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: now_ms(),
        last_seen: None,
    }
}

/// A room record with a fresh id.
pub fn room(kind: &str, name: &str) -> RoomRecord {
    RoomRecord {
        room_id: fresh_id(),
        kind: kind.into(),
        name: name.into(),
        created_at: now_ms(),
        last_seq: 0,
    }
}

/// A member record for `u`.
pub fn member(u: &UserRecord, role: &str, joined_at: i64) -> MemberRecord {
    MemberRecord {
        user_id: u.user_id.clone(),
        username: u.username.clone(),
        role: role.into(),
        joined_at,
    }
}

/// Creates a fresh group room with one owner and returns its id.
pub(crate) async fn group_room(store: &dyn Store) -> String {
    let owner = user();
    let r = room("group", "conformance");
    store
        .create_room(&r, &[member(&owner, "owner", now_ms())])
        .await
        .expect("create_room for a fresh room must succeed");
    r.room_id
}

/// A message with fresh ids.
pub(crate) fn message(body: &str) -> NewMessage {
    NewMessage {
        message_id: fresh_id(),
        sender_id: "sender-id".into(),
        sender_name: "sender".into(),
        body: body.into(),
        sent_at: now_ms(),
        client_msg_id: fresh_id(),
    }
}

/// What a committed `m` must look like at `seq` in `room_id`.
pub(crate) fn stored(room_id: &str, seq: u64, m: &NewMessage) -> StoredMessage {
    StoredMessage {
        room_id: room_id.into(),
        seq,
        message_id: m.message_id.clone(),
        sender_id: m.sender_id.clone(),
        sender_name: m.sender_name.clone(),
        body: m.body.clone(),
        sent_at: m.sent_at,
        client_msg_id: m.client_msg_id.clone(),
    }
}

/// Commits `count` fresh messages in batches of `batch`, starting at head
/// `head`; returns the committed messages in seq order.
pub(crate) async fn fill(
    store: &dyn Store,
    room_id: &str,
    head: u64,
    count: usize,
    batch: usize,
) -> Vec<StoredMessage> {
    let mut out = Vec::with_capacity(count);
    let mut head = head;
    while out.len() < count {
        let n = batch.min(count - out.len());
        let msgs: Vec<NewMessage> = (0..n)
            .map(|i| message(&format!("message {}", head + 1 + i as u64)))
            .collect();
        let outcomes = store
            .commit_messages(room_id, head, &msgs)
            .await
            .unwrap_or_else(|e| panic!("commit at head {head} in {room_id} failed: {e}"));
        assert_eq!(outcomes.len(), n, "one outcome per message");
        for (i, (o, m)) in outcomes.iter().zip(&msgs).enumerate() {
            let want = stored(room_id, head + 1 + i as u64, m);
            assert_eq!(
                o,
                &crate::model::CommitOutcome::Committed(want),
                "fresh message must be committed with the next seq"
            );
            out.push(o.message().clone());
        }
        head += n as u64;
    }
    out
}

/// Reads a room's whole history forward in pages of 200.
pub(crate) async fn all_history(store: &dyn Store, room_id: &str) -> Vec<StoredMessage> {
    let mut out: Vec<StoredMessage> = Vec::new();
    loop {
        let after_seq = out.last().map_or(0, |m| m.seq);
        let page = store
            .messages(
                room_id,
                HistoryRange::After {
                    after_seq,
                    before_seq: None,
                    limit: 200,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("history of {room_id} after {after_seq} failed: {e}"));
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Asserts that `msgs` have seqs exactly `from..=to`, in order.
pub(crate) fn assert_seqs(msgs: &[StoredMessage], from: u64, to: u64, what: &str) {
    let got: Vec<u64> = msgs.iter().map(|m| m.seq).collect();
    let want: Vec<u64> = (from..=to).collect();
    assert_eq!(got, want, "{what}: wrong seqs");
}
