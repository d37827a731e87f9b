//! Multi-process cluster tests: real `parley-node` processes on loopback
//! sharing one embedded store, joined with ractor_cluster.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn users_on_different_nodes_chat() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 3, &[]).await;
    let alice = user(&nodes[0], "alice").await;
    let bob = user(&nodes[1], "bob").await;
    let carol = user(&nodes[2], "carol").await;
    let room = group(&nodes[0], &alice, "across", &[&bob, &carol]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();

    let mut a = Client::connect(&nodes[0], &alice.token).await;
    let mut b = Client::connect(&nodes[1], &bob.token).await;
    let mut c = Client::connect(&nodes[2], &carol.token).await;
    assert_ne!(a.hello["node"], b.hello["node"]);

    // Messages from every node reach every member exactly once, in order.
    let mut expected = 0;
    for round in 0..5 {
        for (i, ws) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
            let ack = ws
                .send_message(&room_id, &format!("m{round}-{i}"), &format!("from {i}"))
                .await;
            assert_eq!(ack["type"], "sent", "{ack}");
            expected += 1;
            assert_eq!(ack["seq"], expected);
        }
    }
    for ws in [&mut a, &mut b, &mut c] {
        let got = ws.messages_until(&room_id, expected).await;
        let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (1..=expected).collect::<Vec<_>>());
    }

    // Typing and receipts cross nodes too.
    b.send(json!({"type": "typing", "room_id": room_id, "active": true}))
        .await;
    let t = c.expect(|f| f["type"] == "typing").await;
    assert_eq!(t["user_id"], bob.user_id.as_str());
    b.expect_none(Duration::from_millis(300), |f| f["type"] == "typing")
        .await;
    // (Carol sent the last message, so her watermark is already there; bob's is one behind.)
    b.send(json!({"type": "read", "room_id": room_id, "seq": expected}))
        .await;
    let r = a
        .expect(|f| {
            f["type"] == "receipt"
                && f["user_id"] == bob.user_id.as_str()
                && f["read_seq"] == expected
        })
        .await;
    assert_eq!(r["read_seq"], expected);

    // Membership changes over HTTP on any node reach the room's owner.
    let dave = user(&nodes[2], "dave").await;
    let add = call(
        &nodes[1],
        "POST",
        &format!("/api/v1/rooms/{room_id}/members"),
        Some(&alice.token),
        Some(json!({"username": dave.username})),
    )
    .await;
    assert_eq!(add.status, 200, "{:?}", add.body);
    let mut d = Client::connect(&nodes[0], &dave.token).await;
    let ack = c.send_message(&room_id, "for-dave", "welcome").await;
    let m = d.expect(|f| f["type"] == "message").await;
    assert_eq!(m["seq"], ack["seq"]);
}

#[tokio::test]
async fn presence_spans_the_cluster() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, &[]).await;
    let alice = user(&nodes[0], "alice").await;
    let bob = user(&nodes[1], "bob").await;
    let dm = call(
        &nodes[0],
        "POST",
        "/api/v1/rooms/direct",
        Some(&alice.token),
        Some(json!({"username": bob.username})),
    )
    .await;
    assert_eq!(dm.status, 201);
    let mut a = Client::connect(&nodes[0], &alice.token).await;
    let b = Client::connect(&nodes[1], &bob.token).await;
    let p = a
        .expect(|f| f["type"] == "presence" && f["user_id"] == bob.user_id.as_str())
        .await;
    assert_eq!(p["status"], "online");
    let prof = call(
        &nodes[0],
        "GET",
        &format!("/api/v1/users/{}", bob.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(
        prof.body["online"], true,
        "online as seen from the other node"
    );
    b.close().await;
    let p = a
        .expect(|f| f["type"] == "presence" && f["status"] == "offline")
        .await;
    assert_eq!(p["user_id"], bob.user_id.as_str());
}
