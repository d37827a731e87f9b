//! Real-time chat over WebSocket against real nodes: send/ack/fan-out,
//! idempotent resend, typing, receipts, presence, sync, several sessions,
//! durability across restarts and graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn hello_then_ping_pong() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let mut ws = Client::connect(&node, &alice.token).await;
    assert_eq!(ws.hello["user_id"], alice.user_id.as_str());
    assert!(ws.hello["session_id"].is_string());
    assert!(ws.hello["node"].is_string());
    assert!(ws.hello["heartbeat_ms"].as_u64().unwrap() > 0);
    ws.send(json!({"type": "ping", "ref": "p1"})).await;
    let pong = ws.expect(|f| f["type"] == "pong").await;
    assert_eq!(pong["ref"], "p1");
}

/// Socket writers run on their own runtime (`--writer-threads`): its
/// threads exist, and they are the ones woken up to write messages.
#[tokio::test]
async fn socket_writers_run_on_their_own_threads() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--writer-threads", "3"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "team", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let writer_wakeups = |node: &Node| -> (usize, u64) {
        let writers: Vec<u64> = node
            .threads()
            .into_iter()
            .filter(|(name, _)| name == "parley-writer")
            .map(|(_, switches)| switches)
            .collect();
        (writers.len(), writers.iter().sum())
    };
    let (count, before) = writer_wakeups(&node);
    assert_eq!(count, 3, "threads: {:?}", node.threads());
    // Messages far enough apart that the writers go idle in between.
    for i in 0..20 {
        a.send_message(room_id, &format!("m{i}"), "hi").await;
        for ws in [&mut a, &mut b] {
            let m = ws.expect(|f| f["type"] == "message").await;
            assert_eq!(m["client_msg_id"], format!("m{i}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, after) = writer_wakeups(&node);
    assert!(
        after >= before + 20,
        "writer threads woke {} times for 20 messages",
        after - before
    );
}

#[tokio::test]
async fn message_reaches_every_session_of_every_member() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await; // not a member
    let room = group(&node, &alice, "team", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();

    let mut a = Client::connect(&node, &alice.token).await;
    let mut b1 = Client::connect(&node, &bob.token).await;
    let mut b2 = Client::connect(&node, &bob.token).await;
    let mut c = Client::connect(&node, &carol.token).await;

    let ack = a.send_message(room_id, "m1", "hello bob").await;
    assert_eq!(ack["type"], "sent", "{ack}");
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["client_msg_id"], "m1");
    assert_eq!(ack["room_id"], room_id);
    assert!(ack["message_id"].is_string() && ack["sent_at"].is_string());

    for ws in [&mut a, &mut b1, &mut b2] {
        let m = ws.expect(|f| f["type"] == "message").await;
        assert_eq!(m["seq"], 1);
        assert_eq!(m["body"], "hello bob");
        assert_eq!(m["sender_id"], alice.user_id.as_str());
        assert_eq!(m["sender_name"], alice.username.as_str());
        assert_eq!(m["message_id"], ack["message_id"]);
        assert_eq!(m["client_msg_id"], "m1");
    }
    c.expect_none(Duration::from_millis(500), |f| f["type"] == "message")
        .await;

    // Seqs are gapless and ordered.
    for i in 2..=20 {
        let ack = b1
            .send_message(room_id, &format!("b{i}"), &format!("n{i}"))
            .await;
        assert_eq!(ack["seq"], i);
    }
    let got = a.messages_until(room_id, 20).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (2..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn resending_a_client_msg_id_never_duplicates() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "dedup", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;

    let first = a.send_message(room_id, "same-id", "once").await;
    // Resend on the same connection and on a new one: same answer.
    let again = a.send_message(room_id, "same-id", "once").await;
    assert_eq!(first["seq"], again["seq"]);
    assert_eq!(first["message_id"], again["message_id"]);
    let mut a2 = Client::connect(&node, &alice.token).await;
    let third = a2.send_message(room_id, "same-id", "once").await;
    assert_eq!(first["message_id"], third["message_id"]);

    let next = a.send_message(room_id, "other-id", "twice").await;
    assert_eq!(next["seq"], 2);
    let got = b.messages_until(room_id, 2).await;
    assert_eq!(got.len(), 2, "bob must see exactly one copy: {got:?}");

    let h = history(&node, &alice, room_id, "").await;
    assert_eq!(h.body["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn typing_reaches_others_but_not_the_typist() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--typing-ttl-ms", "1500"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "typing", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut a2 = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;

    a.send(json!({"type": "typing", "room_id": room_id, "active": true}))
        .await;
    let t = b.expect(|f| f["type"] == "typing").await;
    assert_eq!(t["user_id"], alice.user_id.as_str());
    assert_eq!(t["room_id"], room_id);
    assert_eq!(t["active"], true);
    // It expires by itself without a refresh.
    let t = b
        .expect(|f| f["type"] == "typing" && f["active"] == false)
        .await;
    assert_eq!(t["user_id"], alice.user_id.as_str());
    a.expect_none(Duration::from_millis(300), |f| f["type"] == "typing")
        .await;
    a2.expect_none(Duration::from_millis(300), |f| f["type"] == "typing")
        .await;

    a.send(json!({"type": "typing", "room_id": room_id, "active": true}))
        .await;
    b.expect(|f| f["type"] == "typing" && f["active"] == true)
        .await;
    a.send(json!({"type": "typing", "room_id": room_id, "active": false}))
        .await;
    b.expect(|f| f["type"] == "typing" && f["active"] == false)
        .await;
}

/// A refreshed indicator ends one TTL after its last refresh, by the room
/// (the connection's own backstop, a second later, was what ended it).
#[tokio::test]
async fn a_refreshed_typing_indicator_ends_one_ttl_after_the_refresh() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--typing-ttl-ms", "2000"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room_id = room_id(&group(&node, &alice, "typing", &[&bob]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    b.ping_pong("open").await;
    let typing = json!({"type": "typing", "room_id": room_id, "active": true});
    a.send(typing.clone()).await;
    b.expect(|f| f["type"] == "typing" && f["active"] == true)
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    a.send(typing).await;
    b.expect(|f| f["type"] == "typing" && f["active"] == true)
        .await;
    let refreshed = std::time::Instant::now();
    b.expect(|f| f["type"] == "typing" && f["active"] == false)
        .await;
    let took = refreshed.elapsed();
    assert!(
        took < Duration::from_millis(2900),
        "ended {took:?} after the refresh"
    );
}

/// Typing indicators end when their reason goes, not when their TTL
/// (a minute here) runs out: a typist who closes the app stops typing at
/// once; a member removed from the room stops typing there, and the
/// indicators they were shown end before they hear they were removed
/// (nothing of the room reaches them after that).
#[tokio::test]
async fn typing_ends_when_the_typist_leaves_or_is_removed() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--typing-ttl-ms", "60000"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let room = group(&node, &alice, "typing", &[&bob, &carol]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let mut c = Client::connect(&node, &carol.token).await;
    let typing = |user: &User, active: bool| {
        let user_id = user.user_id.clone();
        move |f: &serde_json::Value| {
            f["type"] == "typing" && f["user_id"] == user_id.as_str() && f["active"] == active
        }
    };
    let start = json!({"type": "typing", "room_id": room_id, "active": true});

    // Bob types, then closes his only session.
    b.send(start.clone()).await;
    a.expect(typing(&bob, true)).await;
    b.close().await;
    a.expect(typing(&bob, false)).await;

    // Alice and carol type; alice removes carol.
    a.send(start.clone()).await;
    c.expect(typing(&alice, true)).await;
    c.send(start).await;
    a.expect(typing(&carol, true)).await;
    let r = call(
        &node,
        "DELETE",
        &format!("/api/v1/rooms/{room_id}/members/{}", carol.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    a.expect(typing(&carol, false)).await;
    // Carol sees alice's indicator end, then her removal.
    let alice_stopped = typing(&alice, false);
    let ended = c
        .expect(|f| alice_stopped(f) || f["type"] == "room" && f["event"] == "member_removed")
        .await;
    assert_eq!(ended["user_id"], alice.user_id.as_str(), "{ended}");
    assert_eq!(ended["active"], false, "{ended}");
    c.expect(|f| f["type"] == "room" && f["event"] == "member_removed")
        .await;
}

#[tokio::test]
async fn receipts_rise_and_never_fall() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "receipts", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    for i in 1..=3 {
        a.send_message(room_id, &format!("r{i}"), "x").await;
    }
    b.messages_until(room_id, 3).await;

    b.send(json!({"type": "delivered", "room_id": room_id, "seq": 3}))
        .await;
    let r = a
        .expect(|f| f["type"] == "receipt" && f["user_id"] == bob.user_id.as_str())
        .await;
    assert_eq!(r["delivered_seq"], 3);
    assert_eq!(r["read_seq"], 0);
    assert_eq!(r["room_id"], room_id);

    b.send(json!({"type": "read", "room_id": room_id, "seq": 2}))
        .await;
    let r = a
        .expect(|f| f["type"] == "receipt" && f["read_seq"] == 2)
        .await;
    assert_eq!(r["delivered_seq"], 3);
    // Lowering is ignored; beyond the head is clamped.
    b.send(json!({"type": "read", "room_id": room_id, "seq": 1}))
        .await;
    a.expect_none(Duration::from_millis(400), |f| f["type"] == "receipt")
        .await;
    b.send(json!({"type": "read", "room_id": room_id, "seq": 99}))
        .await;
    let r = a
        .expect(|f| f["type"] == "receipt" && f["read_seq"] == 3)
        .await;
    assert_eq!(r["delivered_seq"], 3);

    // Unread counts follow the read watermark.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let list = call(&node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
    let entry = &list.body["rooms"][0];
    assert_eq!(entry["last_seq"], 3);
    assert_eq!(entry["read_seq"], 3);
    assert_eq!(entry["unread"], 0);
    a.send_message(room_id, "r4", "x").await;
    let list = call(&node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
    assert_eq!(list.body["rooms"][0]["unread"], 1);
}

/// A member who replies before saying they read still tells the others
/// they read: their own message raised their watermarks quietly, and the
/// `read` that follows, though it raises nothing, is announced because no
/// receipt has shown those watermarks yet. Before, the others never
/// learnt that the messages before the reply were read.
#[tokio::test]
async fn a_read_after_replying_is_announced() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "reply", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let from_bob = |seq: u64| {
        let bob = bob.user_id.clone();
        move |f: &serde_json::Value| {
            f["type"] == "receipt" && f["user_id"] == bob.as_str() && f["read_seq"] == seq
        }
    };
    for i in 1..=3 {
        a.send_message(room_id, &format!("a{i}"), "x").await;
    }
    b.messages_until(room_id, 3).await;
    b.send(json!({"type": "read", "room_id": room_id, "seq": 3}))
        .await;
    a.expect(from_bob(3)).await;

    for i in 4..=6 {
        a.send_message(room_id, &format!("a{i}"), "x").await;
    }
    b.messages_until(room_id, 6).await;
    let ack = b.send_message(room_id, "b7", "reply").await;
    assert_eq!(ack["seq"], 7);
    // The reply's own raise is quiet.
    a.expect_none(Duration::from_millis(300), |f| f["type"] == "receipt")
        .await;
    b.send(json!({"type": "read", "room_id": room_id, "seq": 7}))
        .await;
    let r = a.expect(from_bob(7)).await;
    assert_eq!(r["delivered_seq"], 7);
    // Said once: the same `read` again raises and announces nothing.
    b.send(json!({"type": "read", "room_id": room_id, "seq": 7}))
        .await;
    a.expect_none(Duration::from_millis(400), |f| f["type"] == "receipt")
        .await;
}

#[tokio::test]
async fn presence_online_offline_and_last_seen() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let stranger = user(&node, "stranger").await;
    let dm = call(
        &node,
        "POST",
        "/api/v1/rooms/direct",
        Some(&alice.token),
        Some(json!({"username": bob.username})),
    )
    .await;
    assert_eq!(dm.status, 201);

    let mut a = Client::connect(&node, &alice.token).await;
    let mut s = Client::connect(&node, &stranger.token).await;
    let b = Client::connect(&node, &bob.token).await;
    let p = a
        .expect(|f| f["type"] == "presence" && f["user_id"] == bob.user_id.as_str())
        .await;
    assert_eq!(p["status"], "online");
    let prof = call(
        &node,
        "GET",
        &format!("/api/v1/users/{}", bob.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(prof.body["online"], true);
    assert_eq!(prof.body["username"], bob.username.as_str());

    // A second session, closed, does not make bob offline.
    let b2 = Client::connect(&node, &bob.token).await;
    b2.close().await;
    a.expect_none(Duration::from_millis(500), |f| {
        f["type"] == "presence" && f["status"] == "offline"
    })
    .await;

    b.close().await;
    let p = a
        .expect(|f| f["type"] == "presence" && f["status"] == "offline")
        .await;
    assert_eq!(p["user_id"], bob.user_id.as_str());
    assert!(p["last_seen"].is_string());
    // Only users who share a room hear about it.
    s.expect_none(Duration::from_millis(300), |f| f["type"] == "presence")
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let prof = call(
        &node,
        "GET",
        &format!("/api/v1/users/{}", bob.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(prof.body["online"], false);
    assert!(prof.body["last_seen"].is_string(), "{}", prof.body);
}

#[tokio::test]
async fn sync_replays_exactly_the_missed_messages_in_order() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let r1 = group(&node, &alice, "one", &[&bob]).await;
    let r2 = group(&node, &alice, "two", &[&bob]).await;
    let (r1, r2) = (
        r1["room_id"].as_str().unwrap(),
        r2["room_id"].as_str().unwrap(),
    );
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=5 {
        a.send_message(r1, &format!("x{i}"), &format!("one-{i}"))
            .await;
    }
    for i in 1..=3 {
        a.send_message(r2, &format!("y{i}"), &format!("two-{i}"))
            .await;
    }
    // Bob saw r1 up to 2 and nothing of r2.
    let mut b = Client::connect(&node, &bob.token).await;
    let (got, done) = sync(&mut b, "s1", json!({r1: 2, r2: 0})).await;
    assert_eq!(done["rooms"][r1], 5);
    assert_eq!(done["rooms"][r2], 3);
    assert_eq!(seqs(&got, r1), vec![3, 4, 5]);
    assert_eq!(seqs(&got, r2), vec![1, 2, 3]);

    // Without `rooms` (or with null): everything of every room from 0.
    let mut b2 = Client::connect(&node, &bob.token).await;
    let (all, _) = sync(&mut b2, "all", Value::Null).await;
    assert_eq!(all.len(), 8);
}

/// Sends `sync` of `rooms` and returns the (room, seq) of each message
/// replayed, and the `synced`.
async fn sync(c: &mut Client, r: &str, rooms: Value) -> (Vec<(String, u64)>, Value) {
    c.send(json!({"type": "sync", "ref": r, "rooms": rooms}))
        .await;
    let mut seqs = Vec::new();
    loop {
        let f = c
            .expect(|f| f["type"] == "message" || f["type"] == "synced")
            .await;
        if f["type"] == "synced" {
            assert_eq!(f["ref"], r, "{f}");
            return (seqs, f);
        }
        let room = f["room_id"].as_str().unwrap_or_default().to_string();
        seqs.push((room, f["seq"].as_u64().unwrap_or_default()));
    }
}

/// The seqs of `room` among `replayed`, in the order they came.
fn seqs(replayed: &[(String, u64)], room: &str) -> Vec<u64> {
    replayed
        .iter()
        .filter(|(r, _)| r == room)
        .map(|(_, s)| *s)
        .collect()
}

/// A `sync` gets every message after its cursor, also on a connection that
/// already had them (a client that dropped what it had), and `synced`
/// reports the room's head, also to a client that claims more than that.
#[tokio::test]
async fn a_sync_on_the_same_connection_sends_what_its_cursor_asks_for() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = room_id(&group(&node, &alice, "again", &[&bob]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=5 {
        a.send_message(&room, &format!("x{i}"), "hi").await;
    }
    let mut b = Client::connect(&node, &bob.token).await;
    for (r, cursor, expected) in [
        ("s1", 0, vec![1, 2, 3, 4, 5]),
        ("s2", 0, vec![1, 2, 3, 4, 5]),
        ("s3", 3, vec![4, 5]),
    ] {
        let (got, done) = sync(&mut b, r, json!({&room: cursor})).await;
        assert_eq!(seqs(&got, &room), expected, "{r}");
        assert_eq!(done["rooms"][&room], 5, "{r}: {done}");
    }
    let (got, done) = sync(&mut b, "ahead", json!({&room: 1000})).await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(done["rooms"][&room], 5, "the head, not the cursor: {done}");
    // A sync sent the moment `synced` arrives is never "already running".
    for i in 0..50 {
        let (got, _) = sync(&mut b, &format!("again{i}"), json!({&room: 4})).await;
        assert_eq!(seqs(&got, &room), vec![5]);
    }
    // Live delivery goes on, once.
    a.send_message(&room, "x6", "hi").await;
    let m = b.expect(|f| f["type"] == "message").await;
    assert_eq!(m["seq"], 6);
    b.expect_none(Duration::from_millis(300), |f| f["type"] == "message")
        .await;
}

#[tokio::test]
async fn sync_while_messages_keep_arriving_is_exact() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--ws-rate", "0"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "busy", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=300 {
        a.send(json!({"type": "send", "room_id": room_id, "client_msg_id": format!("pre{i}"), "body": "b"})).await;
    }
    a.messages_until(&room_id, 300).await;
    // Bob connects and syncs from 0 while alice keeps sending.
    let mut b = Client::connect(&node, &bob.token).await;
    b.send(json!({"type": "sync", "ref": "s", "rooms": {room_id.clone(): 0}}))
        .await;
    for i in 1..=100 {
        a.send(json!({"type": "send", "room_id": room_id, "client_msg_id": format!("live{i}"), "body": "b"})).await;
    }
    let got = b.messages_until(&room_id, 400).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=400).collect::<Vec<_>>(),
        "every message exactly once, in order"
    );
}

#[tokio::test]
async fn acked_messages_survive_kill_and_restart() {
    let dir = data_dir();
    let mut node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "durable", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=10 {
        let ack = a
            .send_message(&room_id, &format!("d{i}"), &format!("body {i}"))
            .await;
        assert_eq!(ack["seq"], i);
    }
    node.kill().await;
    node.restart().await;
    let h = history(&node, &bob, &room_id, "").await;
    let msgs = h.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 10);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["seq"], (i + 1) as u64);
        assert_eq!(m["body"], format!("body {}", i + 1));
    }
    // The room continues after its last seq; an old client id still dedups.
    let mut a = Client::connect(&node, &alice.token).await;
    assert_eq!(a.send_message(&room_id, "d11", "after").await["seq"], 11);
    assert_eq!(a.send_message(&room_id, "d3", "body 3").await["seq"], 3);
}

#[tokio::test]
async fn sigterm_closes_sessions_with_1012_and_loses_nothing() {
    let dir = data_dir();
    let mut node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let room = group(&node, &alice, "drain", &[]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=5 {
        a.send_message(&room_id, &format!("t{i}"), "x").await;
    }
    let status = node.terminate().await;
    assert!(status.success(), "clean exit after SIGTERM: {status}");
    assert_eq!(a.expect_close().await, Some(1012));
    node.restart().await;
    let h = history(&node, &alice, &room_id, "").await;
    assert_eq!(h.body["messages"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn idle_rooms_stop_and_restart_from_storage() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--room-idle-secs", "1"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "idle", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    a.send_message(&room_id, "i1", "before").await;
    b.send(json!({"type": "read", "room_id": room_id, "seq": 1}))
        .await;
    // Wait for the room to retire (metrics show no active rooms).
    let mut retired = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if metric_in(&node.metrics_text().await, "parley_rooms_active") == 0 {
            retired = true;
            break;
        }
    }
    assert!(retired, "room actor should stop when idle");
    let ack = a.send_message(&room_id, "i2", "after").await;
    assert_eq!(ack["seq"], 2);
    let m = b.messages_until(&room_id, 2).await;
    assert_eq!(m.last().unwrap()["body"], "after");
    let list = call(&node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
    assert_eq!(
        list.body["rooms"][0]["read_seq"], 1,
        "watermark persisted across the restart"
    );
}

#[tokio::test]
async fn session_closes_with_4001_when_its_token_expires_unless_renewed() {
    let dir = data_dir();
    // Tokens carry whole seconds, so one lasts between TTL-1 and TTL seconds.
    let node = Node::start_with(dir.path(), &["--access-token-ttl-secs", "6"]).await;
    let alice = user(&node, "alice").await;
    // Renewed in time (at least 3 s before the first token expires, with a
    // token that outlives it by at least 1 s): stays open past that expiry.
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &alice.token).await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let fresh = login(&node, &alice.username, &alice.password).await;
    a.send(json!({"type": "auth", "ref": "re", "token": fresh.token}))
        .await;
    let ok = a.expect(|f| f["type"] == "authed").await;
    assert_eq!(ok["ref"], "re");
    // A token of someone else is refused without closing.
    let bob = user(&node, "bob").await;
    a.send(json!({"type": "auth", "ref": "bad", "token": bob.token}))
        .await;
    let err = a
        .expect(|f| f["type"] == "error" && f["ref"] == "bad")
        .await;
    assert_eq!(err["code"], "unauthorized");
    // Not renewed: closed with 4001 once the token is past its `exp` and
    // the 5 s leeway (about 9 s from here).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(b.expect_close().await, Some(4001));
    a.send(json!({"type": "ping", "ref": "still"})).await;
    a.expect(|f| f["type"] == "pong").await;
}

/// A token just past its `exp`, but within the leeway for clocks that
/// differ, is accepted at the upgrade, and its session lasts while the
/// token is accepted (it used to be closed with 4001 right after `hello`).
#[tokio::test]
async fn a_token_within_its_leeway_gets_a_session_until_the_leeway_ends() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    // Expired 2 s ago: accepted for about 3 s more.
    let token = token_signed(SECRET.as_bytes(), &alice, -2);
    let mut a = Client::connect(&node, &token).await;
    for r in ["now", "a second later"] {
        a.send(json!({"type": "ping", "ref": r})).await;
        let pong = a.expect(|f| f["type"] == "pong").await;
        assert_eq!(pong["ref"], r);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert_eq!(a.expect_close().await, Some(4001));
}

/// `auth` with a token that expires sooner than the session's (an older
/// one, still valid) never shortens the session.
#[tokio::test]
async fn auth_with_an_older_token_does_not_shorten_the_session() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let long = token_signed(SECRET.as_bytes(), &alice, 600);
    // Past its exp, within the leeway: accepted for about 2 s more.
    let short = token_signed(SECRET.as_bytes(), &alice, -3);
    let mut a = Client::connect(&node, &long).await;
    a.send(json!({"type": "auth", "ref": "older", "token": short}))
        .await;
    let ok = a.expect(|f| f["type"] == "authed").await;
    let left = ok["expires_in"].as_u64().unwrap_or_default();
    assert!(left > 500, "the session was shortened: {ok}");
    // Past the short token's leeway, the session is still open.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    a.ping_pong("still open").await;
}

#[tokio::test]
async fn another_senders_client_msg_id_is_refused_not_echoed() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let mallory = user(&node, "mallory").await;
    let room = group(&node, &alice, "ids", &[&mallory]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    let mut m = Client::connect(&node, &mallory.token).await;
    let ack = a.send_message(room_id, "shared-id", "alice's words").await;
    assert_eq!(ack["type"], "sent");
    let err = m
        .send_message(room_id, "shared-id", "mallory's words")
        .await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "conflict");
    let h = history(&node, &alice, room_id, "").await;
    let msgs = h.body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["body"], "alice's words");
}

#[tokio::test]
async fn a_message_between_hello_and_sync_still_arrives_in_order() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "race", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap();
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=5 {
        a.send_message(room_id, &format!("p{i}"), "before").await;
    }
    // Bob reconnects having seen up to 2; seq 6 commits after his hello but
    // before his sync.
    let mut b = Client::connect(&node, &bob.token).await;
    a.send_message(room_id, "p6", "in the gap").await;
    b.send(json!({"type": "sync", "ref": "s", "rooms": {room_id: 2}}))
        .await;
    let got = b.messages_until(room_id, 6).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6]);
}

/// A first `sync` that comes late, after live messages above a hole (the
/// client pinged first, so they were not held): everything after its cursor
/// comes in order, the live ones again after the older ones (they came
/// before 1..=3, which a client keeping the highest seq would drop).
#[tokio::test]
async fn a_late_first_sync_sends_everything_after_its_cursor_in_order() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = room_id(&group(&node, &alice, "late", &[&bob]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=3 {
        a.send_message(&room, &format!("l{i}"), "while bob was away")
            .await;
    }
    let mut b = Client::connect(&node, &bob.token).await;
    b.ping_pong("first").await;
    for i in 4..=5 {
        a.send_message(&room, &format!("l{i}"), "live").await;
    }
    let live = b.messages_until(&room, 5).await;
    let live: Vec<u64> = live.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(live, vec![4, 5]);
    let (got, done) = sync(&mut b, "late", json!({&room: 0})).await;
    assert_eq!(seqs(&got, &room), vec![1, 2, 3, 4, 5]);
    assert_eq!(done["rooms"][&room], 5, "{done}");
    // A first sync from a cursor the live ones follow on from sends nothing twice.
    let mut b2 = Client::connect(&node, &bob.token).await;
    b2.ping_pong("first").await;
    a.send_message(&room, "l6", "live").await;
    b2.messages_until(&room, 6).await;
    let (got, _) = sync(&mut b2, "prompt", json!({&room: 5})).await;
    assert!(seqs(&got, &room).is_empty(), "{got:?}");
}

#[tokio::test]
async fn large_rooms_carry_no_presence() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--presence-fanout-max-members", "2"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    group(&node, &alice, "big", &[&bob, &carol]).await; // 3 members > 2
    let mut a = Client::connect(&node, &alice.token).await;
    let c = Client::connect(&node, &carol.token).await;
    a.expect_none(Duration::from_millis(500), |f| f["type"] == "presence")
        .await;
    // A direct room (2 members) still carries it.
    let dm = call(
        &node,
        "POST",
        "/api/v1/rooms/direct",
        Some(&alice.token),
        Some(json!({"username": bob.username})),
    )
    .await;
    assert_eq!(dm.status, 201);
    let _b = Client::connect(&node, &bob.token).await;
    let p = a.expect(|f| f["type"] == "presence").await;
    assert_eq!(p["user_id"], bob.user_id.as_str());
    drop(c);
}

/// Many users connecting and disconnecting at once, some several times in a
/// row: the last presence event a contact gets for each user is that user's
/// true state, and no older one arrives after it.
#[tokio::test]
async fn presence_after_a_churn_of_sessions_ends_in_each_users_true_state() {
    const USERS: usize = 24;
    const ROUNDS: usize = 3;
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &["--register-rate-per-ip", "0", "--login-rate-per-ip", "0"],
    )
    .await;
    let watcher = user(&node, "watcher").await;
    let mut users = Vec::new();
    for _ in 0..USERS {
        users.push(user(&node, "churn").await);
    }
    let members: Vec<&User> = users.iter().collect();
    group(&node, &watcher, "churn", &members).await;
    let mut w = Client::connect(&node, &watcher.token).await;

    // Every user opens and closes sessions ROUNDS times, all at once; the
    // even ones end with a session open.
    let node = std::sync::Arc::new(node);
    let mut tasks = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let node = node.clone();
        let token = u.token.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                Client::connect(&node, &token).await.close().await;
            }
            if i % 2 == 0 {
                Some(Client::connect(&node, &token).await)
            } else {
                None
            }
        }));
    }
    let mut kept = Vec::new();
    for t in tasks {
        kept.push(t.await.expect("churn task"));
    }
    let expected: std::collections::HashMap<String, &str> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let status = if i % 2 == 0 { "online" } else { "offline" };
            (u.user_id.clone(), status)
        })
        .collect();

    // Read presence until every user's latest status is the true one, then
    // a while longer: nothing stale may follow.
    let mut latest: std::collections::HashMap<String, String> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let settled = |latest: &std::collections::HashMap<String, String>| {
        expected
            .iter()
            .all(|(u, s)| latest.get(u).map(String::as_str) == Some(*s))
    };
    while !settled(&latest) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence did not settle: {latest:?}"
        );
        if let Read::Frame(f) = w.read(Duration::from_millis(200)).await {
            if f["type"] == "presence" {
                let user = f["user_id"].as_str().expect("user_id").to_string();
                let status = f["status"].as_str().expect("status").to_string();
                latest.insert(user, status);
            }
        }
    }
    let quiet = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < quiet {
        if let Read::Frame(f) = w.read(Duration::from_millis(100)).await {
            if f["type"] == "presence" {
                let user = f["user_id"].as_str().expect("user_id").to_string();
                let status = f["status"].as_str().expect("status").to_string();
                latest.insert(user, status);
            }
        }
    }
    assert!(settled(&latest), "a stale status came last: {latest:?}");
    drop(kept);
}

/// One sync at a time per connection: a second `sync` sent right behind the
/// first is refused with `invalid_request`, and the first still completes.
#[tokio::test]
async fn a_second_sync_while_one_runs_is_refused() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--ws-rate", "0"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "busy", &[&bob]).await;
    let room_id = room_id(&room);
    let mut a = Client::connect(&node, &alice.token).await;
    // Enough history for a replay of several pages (200 a page), so that it
    // is still running when the second frame arrives.
    const HISTORY: u64 = 600;
    let sends: Vec<Value> = (1..=HISTORY)
        .map(|i| json!({"type": "send", "ref": format!("s{i}"), "room_id": room_id, "client_msg_id": format!("m{i}"), "body": "hi"}))
        .collect();
    for chunk in sends.chunks(100) {
        a.send_together(chunk).await;
        for _ in chunk {
            a.expect(|f| f["type"] == "sent").await;
        }
    }
    let mut b = Client::connect(&node, &bob.token).await;
    // Both frames in one write: the second reaches the session while the
    // first replay is still reading storage and writing its frames.
    let first = json!({"type": "sync", "ref": "first", "rooms": {room_id.clone(): 0}});
    let second = json!({"type": "sync", "ref": "second", "rooms": {room_id.clone(): 0}});
    b.send_together(&[first, second]).await;
    let refused = b
        .expect(|f| f["type"] == "error" && f["ref"] == "second")
        .await;
    assert_eq!(refused["code"], "invalid_request", "{refused}");
    let synced = b
        .expect(|f| f["type"] == "synced" && f["ref"] == "first")
        .await;
    assert_eq!(synced["rooms"][&room_id], HISTORY);
    let seqs: Vec<u64> = b
        .take_backlog()
        .iter()
        .filter(|f| f["type"] == "message")
        .filter_map(|f| f["seq"].as_u64())
        .collect();
    assert_eq!(seqs, (1..=HISTORY).collect::<Vec<_>>());
}

/// A token whose `exp` lies at the end of time (only the node's own secret
/// can sign one) gets a working session, on connect and in `auth`; the
/// session's deadline overflowed the clock and its reader panicked,
/// leaving the user online for good.
#[tokio::test]
async fn a_token_that_never_expires_does_not_break_its_session() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let _room = group(&node, &alice, "forever", &[&bob]).await;
    let mut claims = claims_for(&alice, 600);
    claims["exp"] = json!(u64::MAX);
    let forever = jwt_hs256(
        SECRET.as_bytes(),
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims,
    );
    let mut a = Client::connect(&node, &forever).await;
    a.ping_pong("on connect").await;
    let mut b = Client::connect(&node, &token_signed(SECRET.as_bytes(), &alice, 600)).await;
    b.send(json!({"type": "auth", "ref": "forever", "token": forever}))
        .await;
    b.expect(|f| f["type"] == "authed" && f["ref"] == "forever")
        .await;
    b.ping_pong("after auth").await;
    // Both sessions end, and alice goes offline.
    a.close().await;
    b.close().await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = call(
            &node,
            "GET",
            &format!("/api/v1/users/{}", alice.user_id),
            Some(&bob.token),
            None,
        )
        .await;
        if r.body["online"] == false {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice stays online: {:?}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
