//! Multi-process cluster tests: real `parley-node` processes on loopback
//! sharing one embedded store, joined with ractor_cluster.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

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

    // Inter-node traffic shows in the metrics of every node.
    for node in &nodes {
        let text = node.metrics_text().await;
        for name in [
            "parley_peer_messages_out_total",
            "parley_peer_bytes_in_total",
        ] {
            assert!(metric_in(&text, name) > 0, "{name} on {}", node.addr);
        }
        assert!(text.contains("parley_cluster_members{"), "members gauge");
    }
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

/// A user whose sessions on two nodes start together, or end together, is
/// announced online once and offline once, to watchers on either node, and
/// their last-seen is kept. Before, each node saw the other's session still
/// there: both announced the start, and neither announced the end.
#[tokio::test]
async fn sessions_on_two_nodes_that_start_or_end_together_are_announced_once() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, &[]).await;
    let roamer = user(&nodes[0], "roamer").await;
    let watchers = [user(&nodes[0], "w0").await, user(&nodes[0], "w1").await];
    group(&nodes[0], &roamer, "watched", &[&watchers[0], &watchers[1]]).await;
    let mut w0 = Client::connect(&nodes[0], &watchers[0].token).await;
    let mut w1 = Client::connect(&nodes[1], &watchers[1].token).await;
    let quiet = Duration::from_millis(400);
    for round in 0..8 {
        let (s0, s1) = tokio::join!(
            Client::connect(&nodes[0], &roamer.token),
            Client::connect(&nodes[1], &roamer.token)
        );
        for w in [&mut w0, &mut w1] {
            w.expect(presence_of("online", roamer.user_id.clone()))
                .await;
            w.expect_none(quiet, presence_of("online", roamer.user_id.clone()))
                .await;
        }
        tokio::join!(s0.close(), s1.close());
        for w in [&mut w0, &mut w1] {
            let offline = w
                .expect(presence_of("offline", roamer.user_id.clone()))
                .await;
            assert!(offline["last_seen"].is_string(), "round {round}: {offline}");
            w.expect_none(quiet, presence_of("offline", roamer.user_id.clone()))
                .await;
        }
        for (node, asker) in nodes.iter().zip(&watchers) {
            let path = format!("/api/v1/users/{}", roamer.user_id);
            let r = call(node, "GET", &path, Some(&asker.token), None).await;
            assert_eq!(r.body["online"], false, "round {round}: {}", r.body);
            assert!(r.body["last_seen"].is_string(), "round {round}: {}", r.body);
        }
    }
}

use std::sync::Arc;

use common::traffic;
use tokio::sync::watch;

/// Flags of the clusters whose nodes a test pauses (SIGSTOP): peers drop a
/// silent node after 1 s.
const PAUSABLE: &[&str] = &["--cluster-failure-timeout-ms", "1000", "--ws-rate", "0"];

/// What happens to a node in the middle of the traffic.
enum Failure {
    /// SIGKILL node 2.
    Kill,
    /// SIGTERM node 2 (drain).
    Drain,
    /// A fourth node joins.
    Join,
    /// SIGSTOP node 2 until the others drop it from their view, then SIGCONT:
    /// its clients stay connected through the pause and must miss nothing.
    Pause,
}

/// Three rooms with a sender and two receivers each, spread over the nodes;
/// the failure strikes mid-traffic; then every guarantee is checked.
async fn traffic_through(failure: Failure) {
    let dir = data_dir();
    let (mut nodes, seeds) = start_cluster_with_seeds(dir.path(), 3, &["--ws-rate", "0"]).await;
    let mut addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let owner = user(&nodes[0], "owner").await;
    let mut rooms = Vec::new();
    let mut people = Vec::new();
    for r in 0..3 {
        let s = user(&nodes[0], &format!("s{r}")).await;
        let a = user(&nodes[0], &format!("a{r}")).await;
        let b = user(&nodes[0], &format!("b{r}")).await;
        let room = group(&nodes[0], &owner, &format!("room{r}"), &[&s, &a, &b]).await;
        rooms.push(room["room_id"].as_str().unwrap().to_string());
        people.push((s, a, b));
    }
    // A node that will join is reachable for clients once it runs.
    let new_port = free_port();
    let shared_addrs = Arc::new(addrs.clone());
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut targets = Vec::new();
    for (r, (s, a, b)) in people.iter().enumerate() {
        senders.push(tokio::spawn(traffic::sender(
            shared_addrs.clone(),
            r,
            s.token.clone(),
            rooms[r].clone(),
            format!("r{r}"),
            60,
            Duration::from_millis(25),
        )));
        let (tx, rx) = watch::channel(None);
        targets.push(tx);
        for (k, u) in [a, b].into_iter().enumerate() {
            receivers.push((
                r,
                tokio::spawn(traffic::receiver(
                    shared_addrs.clone(),
                    r + k + 1,
                    u.token.clone(),
                    rooms[r].clone(),
                    rx.clone(),
                )),
            ));
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let killed_at = std::time::Instant::now();
    match failure {
        Failure::Kill => nodes[1].kill().await,
        Failure::Drain => {
            let status = nodes[1].terminate().await;
            assert!(status.success(), "drained node exits cleanly: {status}");
        }
        Failure::Join => {
            let node =
                start_cluster_node(dir.path(), "n4", new_port, &seeds, &["--ws-rate", "0"]).await;
            addrs.push(node.addr.clone());
            nodes.push(node);
        }
        Failure::Pause => {
            nodes[1].signal("STOP");
            for i in [0, 2] {
                wait_members(&nodes[i], 2).await;
            }
            // Traffic goes on without it for a moment.
            tokio::time::sleep(Duration::from_millis(300)).await;
            nodes[1].signal("CONT");
        }
    }
    let live: Vec<usize> = match failure {
        Failure::Join => vec![0, 1, 2, 3],
        Failure::Pause => vec![0, 1, 2],
        _ => vec![0, 2],
    };
    for i in &live {
        wait_members(&nodes[*i], live.len()).await;
    }
    // Every live node places rooms on all of them (a joined node too, once
    // it hears every member).
    for i in &live {
        wait_owners(&nodes[*i], live.len()).await;
    }
    eprintln!(
        "membership settled {:?} after the failure",
        killed_at.elapsed()
    );
    let mut acked = Vec::new();
    for s in senders {
        acked.push(s.await.unwrap());
    }
    let mut violations = Vec::new();
    let mut histories = Vec::new();
    for (r, room_id) in rooms.iter().enumerate() {
        let history = all_messages(&nodes[0], &owner, room_id).await;
        targets[r].send_replace(Some(history.len() as u64));
        assert_eq!(
            acked[r].len(),
            60,
            "room {r}: every send was eventually acked"
        );
        histories.push(history);
    }
    let mut received: Vec<Vec<Vec<u64>>> = vec![Vec::new(); 3];
    for (r, h) in receivers {
        received[r].push(h.await.unwrap());
    }
    let mut repaired = 0;
    for i in &live {
        let text = nodes[*i].metrics_text().await;
        repaired += metric_in(&text, "parley_delivery_gaps_repaired_total");
    }
    eprintln!("delivery gaps repaired on the live nodes: {repaired}");
    for r in 0..3 {
        for v in traffic::check(&acked[r], &histories[r], &received[r]) {
            violations.push(format!("room {r}: {v}"));
        }
    }
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}

#[tokio::test]
async fn a_killed_node_loses_no_acked_message() {
    traffic_through(Failure::Kill).await;
}

#[tokio::test]
async fn a_drained_node_loses_nothing() {
    traffic_through(Failure::Drain).await;
}

#[tokio::test]
async fn a_joining_node_takes_over_rooms_under_traffic() {
    traffic_through(Failure::Join).await;
}

#[tokio::test]
async fn clients_of_a_paused_node_miss_nothing() {
    traffic_through(Failure::Pause).await;
}

/// Two nodes that do not know each other (clusters of one) share one store, so
/// both act as the owner of the same room at once. The conditional commit
/// must still give every acked message its own seq, lose none and overwrite none.
#[tokio::test]
async fn two_owners_of_one_room_never_lose_or_reuse_a_seq() {
    let dir = data_dir();
    let n1 = start_cluster_of_one(dir.path(), "n1", &["--ws-rate", "0"]).await;
    let n2 = start_cluster_of_one(dir.path(), "n2", &["--ws-rate", "0"]).await;
    let owner = user(&n1, "owner").await;
    let mut members = Vec::new();
    for i in 0..4 {
        members.push(user(&n1, &format!("m{i}")).await);
    }
    let refs: Vec<&User> = members.iter().collect();
    let room = group(&n1, &owner, "contested", &refs).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let node = if i % 2 == 0 { &n1 } else { &n2 };
        tasks.push(tokio::spawn(traffic::sender(
            Arc::new(vec![node.addr.clone()]),
            0,
            m.token.clone(),
            room_id.clone(),
            format!("w{i}"),
            50,
            Duration::from_millis(1),
        )));
    }
    let mut acked = Vec::new();
    let mut per_node: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for (i, t) in tasks.into_iter().enumerate() {
        let a = t.await.unwrap();
        assert_eq!(a.len(), 50);
        per_node[i % 2].extend(a.iter().map(|(_, s)| *s));
        acked.extend(a);
    }
    // Both owners really wrote concurrently: their seqs interleave.
    let (min0, max0) = (
        per_node[0].iter().min().unwrap(),
        per_node[0].iter().max().unwrap(),
    );
    assert!(
        per_node[1].iter().any(|s| s > min0 && s < max0),
        "the two owners did not overlap"
    );
    let history = all_messages(&n1, &owner, &room_id).await;
    assert_eq!(history.len(), 200);
    let violations = traffic::check(&acked, &history, &[]);
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}

/// A node with seeds that answer nobody is not ready until it joins (or the
/// join grace runs out), and `/api/v1/cluster` says so.
#[tokio::test]
async fn not_ready_until_joined() {
    let dir = data_dir();
    let (nodes, _) = start_cluster_with_seeds(dir.path(), 1, &[]).await;
    let lonely_port = free_port();
    let seed_nowhere = format!("127.0.0.1:{}", free_port());
    let waiting = Node::start_unready(
        dir.path(),
        &[
            "--node-name",
            "late",
            "--cluster-listen",
            &format!("127.0.0.1:{lonely_port}"),
            "--seeds",
            &seed_nowhere,
            "--cluster-secret",
            CLUSTER_SECRET,
            "--cluster-join-grace-ms",
            "600000",
        ],
    )
    .await;
    let r = call(&waiting, "GET", "/ready", None, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let c = call(&waiting, "GET", "/api/v1/cluster", None, None).await;
    assert_eq!(c.body["joined"], false);
    drop(nodes);
}

/// A node the cluster refuses (another cluster secret, or a name a member
/// already has) does not serve alone once its join grace is over: it stays
/// not ready and says why. It used to become ready by itself beside the
/// cluster, on the same store, and its users' messages reached nobody on
/// the cluster's nodes.
#[tokio::test]
async fn a_node_the_cluster_refuses_does_not_serve_alone() {
    let dir = data_dir();
    let (nodes, seeds) = start_cluster_with_seeds(dir.path(), 1, &[]).await;
    for (name, secret) in [
        ("intruder", "another-cluster-secret-012345"),
        ("n1", CLUSTER_SECRET),
    ] {
        let refused = Node::start_unready(
            dir.path(),
            &[
                "--node-name",
                name,
                "--cluster-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--seeds",
                &seeds,
                "--cluster-secret",
                secret,
                "--cluster-join-grace-ms",
                "3000",
            ],
        )
        .await;
        // Twice the grace: never ready.
        let until = Instant::now() + Duration::from_secs(6);
        while Instant::now() < until {
            let r = call(&refused, "GET", "/ready", None, None).await;
            assert_eq!(r.status, 503, "{name}: {}", r.body);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = refused.stderr_log();
        assert!(
            log.contains("cluster peer ended the session before this node joined"),
            "{name}:\n{log}"
        );
        // The cluster itself carries on.
        wait_members(&nodes[0], 1).await;
    }
}

/// A live delivery lost on the way is noticed by the receiving connection at
/// the room's next message, and the missing seqs are replayed from storage
/// before it, in order. Here the loss is forced: two nodes that are
/// clusters of their own share one store, so each one's room actor fans out
/// only to its own node's sessions (as a node whose view of the cluster is not complete
/// yet would).
#[tokio::test]
async fn a_lost_live_delivery_is_replayed_when_the_next_message_shows_the_gap() {
    let dir = data_dir();
    let n1 = start_cluster_of_one(dir.path(), "n1", &[]).await;
    let n2 = start_cluster_of_one(dir.path(), "n2", &[]).await;
    let near = user(&n1, "near").await;
    let far = user(&n1, "far").await;
    let reader = user(&n1, "reader").await;
    let room = group(&n1, &near, "split", &[&far, &reader]).await;
    let room_id = room_id(&room);
    let is_message = |f: &serde_json::Value| f["type"] == "message";

    let mut r = Client::connect(&n2, &reader.token).await;
    r.send(json!({"type": "sync", "ref": "s", "rooms": {room_id.clone(): 0}}))
        .await;
    r.expect(|f| f["type"] == "synced").await;
    let mut a = Client::connect(&n2, &near.token).await;
    let mut b = Client::connect(&n1, &far.token).await;

    let first = a.send_message(&room_id, "one", "one").await;
    assert_eq!(first["type"], "sent", "{first}");
    let got = r.expect(is_message).await;
    assert_eq!(got["seq"], first["seq"]);

    // Committed by n1's room actor: n2's sessions never hear of it live.
    let lost = b.send_message(&room_id, "two", "two").await;
    assert_eq!(lost["type"], "sent", "{lost}");
    r.expect_none(Duration::from_millis(300), is_message).await;

    // The next message through n2 shows the gap; the lost one comes first.
    // (The owner on n2 may answer `unavailable` while it reloads the head
    // n1 moved.)
    let next = a.send_message_until_sent(&room_id, "three", "three").await;
    assert_eq!(next["type"], "sent", "{next}");
    let m = r.expect(is_message).await;
    assert_eq!(m["seq"], lost["seq"], "the lost message first: {m}");
    assert_eq!(m["body"], "two");
    let m = r.expect(is_message).await;
    assert_eq!(
        m["seq"], next["seq"],
        "then the one that showed the gap: {m}"
    );
    r.expect_none(Duration::from_millis(300), is_message).await;
    // The reader's connection and the sender's own (it gets the room's
    // messages too) each repaired one gap.
    let text = n2.metrics_text().await;
    assert_eq!(metric_in(&text, "parley_delivery_gaps_repaired_total"), 2);
}

/// A live delivery lost while a node was out of the owner's view reaches
/// that node's clients when it comes back, even when no later message of
/// the room shows the gap: an owner tells a node that (re)joins its view the
/// head of each of its rooms. Here the node is paused (SIGSTOP) past the
/// failure timeout, so the owner drops it from its view, and the message is
/// committed meanwhile. A receipt broadcast meanwhile comes with the notice.
#[tokio::test]
async fn a_delivery_lost_while_a_node_was_away_is_replayed_when_it_returns() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, PAUSABLE).await;
    let near = user(&nodes[0], "near").await;
    let reader = user(&nodes[0], "reader").await;
    let room = group(&nodes[0], &near, "away", &[&reader]).await;
    let room_id = room_id(&room);
    let is_message = |f: &serde_json::Value| f["type"] == "message";

    let mut r = Client::connect(&nodes[1], &reader.token).await;
    r.send(json!({"type": "sync", "ref": "s", "rooms": {room_id.clone(): 0}}))
        .await;
    r.expect(|f| f["type"] == "synced").await;
    let mut a = Client::connect(&nodes[0], &near.token).await;
    let first = a.send_message(&room_id, "one", "one").await;
    assert_eq!(first["type"], "sent", "{first}");
    assert_eq!(r.expect(is_message).await["seq"], first["seq"]);

    // The reader's node stops answering; its peer drops it from its view.
    nodes[1].signal("STOP");
    wait_members(&nodes[0], 1).await;
    // (The room may be moving to the node that is left.)
    let lost = a.send_message_until_sent(&room_id, "two", "two").await;
    assert_eq!(lost["type"], "sent", "{lost}");
    // Near reads it; that receipt is lost too.
    a.send(json!({"type": "read", "room_id": room_id, "seq": lost["seq"]}))
        .await;
    a.ping_pong("read-sent").await;

    // Back again: the owner's head notice shows the reader's connection the
    // gap, and the message is replayed from storage. Nothing else is sent.
    nodes[1].signal("CONT");
    let m = r.expect(is_message).await;
    assert_eq!(m["seq"], lost["seq"], "the lost message: {m}");
    assert_eq!(m["body"], "two");
    r.expect_none(Duration::from_millis(300), is_message).await;
    // The notice carried the room's watermarks: near's read reaches the reader.
    r.expect(|f| {
        f["type"] == "receipt"
            && f["user_id"] == near.user_id.as_str()
            && f["read_seq"] == lost["seq"]
    })
    .await;
    let text = nodes[1].metrics_text().await;
    assert!(metric_in(&text, "parley_delivery_gaps_repaired_total") >= 1);
}

/// A node that drops out of a peer's view takes its users offline there;
/// when it comes back, they are announced online again to the peer's
/// sessions (they never left).
#[tokio::test]
async fn users_of_a_node_that_comes_back_are_online_again() {
    let NearAndFar {
        dir: _dir,
        nodes,
        near,
        far,
        mut a,
        b: _b,
    } = near_and_far(PAUSABLE).await;

    // Far's node stops answering: near's node drops it and says far left.
    nodes[1].signal("STOP");
    wait_members(&nodes[0], 1).await;
    a.expect(presence_of("offline", far.user_id.clone())).await;
    assert!(!online_as_seen_by(&nodes[0], &near, &far).await);

    // It comes back with far still connected: far is online again.
    nodes[1].signal("CONT");
    wait_members(&nodes[0], 2).await;
    a.expect(presence_of("online", far.user_id.clone())).await;
    assert!(online_as_seen_by(&nodes[0], &near, &far).await);
}

/// A node killed and started again before its peers noticed it was gone
/// comes back without its old sessions: their users go offline for the
/// others (the peers compare the node's new set of users with the old one)
/// instead of staying online for good.
#[tokio::test]
async fn users_of_a_node_restarted_before_anyone_noticed_go_offline() {
    let NearAndFar {
        dir: _dir,
        mut nodes,
        near,
        far,
        mut a,
        b: _b,
    } = near_and_far(&["--cluster-failure-timeout-ms", "60000"]).await;
    nodes[1].kill().await;
    nodes[1].restart().await;
    a.expect(presence_of("offline", far.user_id.clone())).await;
    assert!(!online_as_seen_by(&nodes[0], &near, &far).await);
    let path = format!("/api/v1/users/{}", far.user_id);
    let r = call(&nodes[0], "GET", &path, Some(&near.token), None).await;
    assert!(r.body["last_seen"].is_string(), "{}", r.body);
}

/// A node that restarted is ready only once its peers see it too: a
/// client that connects the moment `/ready` says 200 and sends into rooms
/// owned by the other nodes gets every `sent`. Before, the node was ready
/// as soon as it saw one peer, the owners' answers to it were dropped while
/// they did not yet count it live, and most of those sends (committed and
/// delivered) never got their ack.
#[tokio::test]
async fn a_node_is_ready_only_once_its_peers_see_it() {
    let dir = data_dir();
    let mut nodes = start_cluster(dir.path(), 3, &["--cluster-failure-timeout-ms", "1000"]).await;
    let alice = user(&nodes[0], "alice").await;
    let mut rooms = Vec::new();
    for i in 0..8 {
        rooms.push(room_id(
            &group(&nodes[0], &alice, &format!("r{i}"), &[]).await,
        ));
    }
    for round in 0..3 {
        nodes[2].kill().await;
        wait_members(&nodes[0], 2).await;
        nodes[2].restart().await;
        let mut ws = Client::connect(&nodes[2], &alice.token).await;
        ws.send(json!({"type": "sync", "ref": "s"})).await;
        ws.expect(|f| f["type"] == "synced").await;
        for (i, room) in rooms.iter().enumerate() {
            ws.send(
                json!({"type": "send", "ref": format!("{round}-{i}"), "room_id": room,
                "client_msg_id": format!("{round}-{i}"), "body": "hi"}),
            )
            .await;
        }
        for i in 0..rooms.len() {
            let r = format!("{round}-{i}");
            let ack = ws.expect(|f| f["ref"] == r.as_str()).await;
            assert_eq!(ack["type"], "sent", "round {round}: {ack}");
        }
    }
}

/// A room change routed to an owner that stops answering is answered as
/// soon as its node leaves the view (`unavailable`, saying the change may
/// have been made), not at the 10 s request timeout.
#[tokio::test]
async fn a_room_change_waiting_on_a_node_that_left_is_answered_at_once() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, PAUSABLE).await;
    wait_owners(&nodes[0], 2).await;
    let alice = user(&nodes[0], "alice").await;
    let mut rooms = Vec::new();
    for i in 0..8 {
        rooms.push(room_id(
            &group(&nodes[0], &alice, &format!("r{i}"), &[]).await,
        ));
    }
    nodes[1].signal("STOP");
    let paths: Vec<String> = rooms.iter().map(|r| format!("/api/v1/rooms/{r}")).collect();
    let renames = paths.iter().map(|path| {
        call(
            &nodes[0],
            "PATCH",
            path,
            Some(&alice.token),
            Some(json!({"name": "renamed"})),
        )
    });
    let answers = futures_util::future::join_all(renames).await;
    nodes[1].signal("CONT");
    let mut waited = 0;
    for a in &answers {
        if a.status == 200 {
            continue;
        }
        assert_eq!(a.status, 503, "{}", a.body);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("may have been made"), "{}", a.body);
        waited += 1;
    }
    assert!(waited > 0, "no room was owned by the paused node");
}

/// Two actors of one room (two owners around a handover; here two
/// clusters of one sharing a store): a change through one starts from
/// what the other stored meanwhile, so its `room` event shows the room as it
/// is. Before, the event carried the name the actor had loaded, undoing a
/// rename on every client that applies room snapshots.
#[tokio::test]
async fn a_room_change_starts_from_what_another_owner_stored() {
    let dir = data_dir();
    let n1 = start_cluster_of_one(dir.path(), "n1", &[]).await;
    let n2 = start_cluster_of_one(dir.path(), "n2", &[]).await;
    let owner = user(&n1, "owner").await;
    let newcomer = user(&n1, "newcomer").await;
    let room = room_id(&group(&n1, &owner, "before", &[]).await);
    // Both nodes have the room's actor running.
    let mut w1 = Client::connect(&n1, &owner.token).await;
    let mut w2 = Client::connect(&n2, &owner.token).await;
    w1.send_message(&room, "one", "x").await;
    w2.send_message(&room, "two", "y").await;
    let path = format!("/api/v1/rooms/{room}");
    let r = call(
        &n2,
        "PATCH",
        &path,
        Some(&owner.token),
        Some(json!({"name": "after"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = call(
        &n1,
        "POST",
        &format!("{path}/members"),
        Some(&owner.token),
        Some(json!({"username": newcomer.username})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["name"], "after", "{}", r.body);
    let added = w1
        .expect(|f| f["type"] == "room" && f["event"] == "member_added")
        .await;
    assert_eq!(added["room"]["name"], "after", "{added}");
    let members = added["room"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{added}");
}

/// Two nodes; `near` connected to the first (`a`), `far` to the second
/// (`b`), sharing a room; `a` has seen far come online.
struct NearAndFar {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
    near: User,
    far: User,
    a: Client,
    b: Client,
}

async fn near_and_far(flags: &[&str]) -> NearAndFar {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, flags).await;
    let near = user(&nodes[0], "near").await;
    let far = user(&nodes[0], "far").await;
    group(&nodes[0], &near, "friends", &[&far]).await;
    let mut a = Client::connect(&nodes[0], &near.token).await;
    let b = Client::connect(&nodes[1], &far.token).await;
    a.expect(presence_of("online", far.user_id.clone())).await;
    NearAndFar {
        dir,
        nodes,
        near,
        far,
        a,
        b,
    }
}

/// Matches a `presence` event of `user_id` with `status`.
fn presence_of(status: &'static str, user_id: String) -> impl Fn(&serde_json::Value) -> bool {
    move |f| f["type"] == "presence" && f["user_id"] == user_id.as_str() && f["status"] == status
}

/// A drained node's users go offline once. Its peers announce it when the
/// node leaves their view; the node's own sessions, closed after that,
/// announced it a second time before.
#[tokio::test]
async fn the_users_of_a_drained_node_go_offline_once() {
    let NearAndFar {
        dir: _dir,
        mut nodes,
        near,
        far,
        mut a,
        b: _b,
    } = near_and_far(&[]).await;

    nodes[1].terminate().await;
    let offline = a.expect(presence_of("offline", far.user_id.clone())).await;
    a.expect_none(
        Duration::from_secs(3),
        presence_of("offline", far.user_id.clone()),
    )
    .await;
    assert!(!online_as_seen_by(&nodes[0], &near, &far).await);
    // last_seen was kept.
    let path = format!("/api/v1/users/{}", far.user_id);
    let r = call(&nodes[0], "GET", &path, Some(&near.token), None).await;
    assert!(r.body["last_seen"].is_string(), "{}", r.body);
    assert!(offline["last_seen"].is_string(), "{offline}");
}

/// Typing indicators end even in rooms whose owner died: the room, started
/// again on the live node, has no timer for them, so each connection ends
/// the indicators it shows itself. Every room gets exactly one end; before,
/// the rooms the dead node had owned never ended theirs.
#[tokio::test]
async fn typing_ends_in_rooms_whose_owner_died() {
    let dir = data_dir();
    let mut nodes = start_cluster(dir.path(), 2, &["--typing-ttl-ms", "2000"]).await;
    let near = user(&nodes[0], "near").await;
    let far = user(&nodes[0], "far").await;
    let mut rooms = Vec::new();
    for i in 0..8 {
        let room = group(&nodes[0], &near, &format!("r{i}"), &[&far]).await;
        rooms.push(room_id(&room));
    }
    let mut a = Client::connect(&nodes[0], &near.token).await;
    let mut b = Client::connect(&nodes[1], &far.token).await;
    for r in &rooms {
        b.send(json!({"type": "typing", "room_id": r, "active": true}))
            .await;
    }
    for r in &rooms {
        let r = r.clone();
        a.expect(move |f| {
            f["type"] == "typing" && f["room_id"] == r.as_str() && f["active"] == true
        })
        .await;
    }
    nodes[1].kill().await;
    // TTL 2 s, the connection's grace 1 s, then a margin.
    let mut ends: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match a.read(left).await {
            Read::Frame(f) if f["type"] == "typing" => {
                assert_eq!(f["active"], false, "{f}");
                let room = f["room_id"].as_str().unwrap_or_default().to_string();
                *ends.entry(room).or_default() += 1;
            }
            Read::Frame(_) => {}
            Read::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    for r in &rooms {
        assert_eq!(ends.get(r), Some(&1), "room {r}: ends {ends:?}");
    }
}

/// Whether `node` says `user` is online when `asker` looks them up.
async fn online_as_seen_by(node: &Node, asker: &User, user: &User) -> bool {
    let path = format!("/api/v1/users/{}", user.user_id);
    let r = call(node, "GET", &path, Some(&asker.token), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["online"]
        .as_bool()
        .unwrap_or_else(|| panic!("{}", r.body))
}

/// A room's owner that was paused (or cut off) past the failure timeout
/// finds, when it is back, the changes made to the room meanwhile: its peer
/// owned the room while it was away and removed one member and added
/// another. Once the peer has the owner in its view again, the owner's room
/// actors start over from storage: the removed member can no longer post
/// through it, and the added one can.
#[tokio::test]
async fn an_owner_that_was_away_learns_the_room_changes_made_meanwhile() {
    let dir = data_dir();
    let nodes = start_cluster(dir.path(), 2, PAUSABLE).await;
    let admin = user(&nodes[0], "admin").await;
    let gone = user(&nodes[0], "gone").await;
    let added = user(&nodes[0], "added").await;
    let room = group(&nodes[0], &admin, "changing", &[&gone]).await;
    let room_id = room_id(&room);
    // The owner by placement over both nodes, and the other one.
    let owner = parley_actors::cluster::placement::owner(&room_id, &["n1", "n2"]).copied();
    let (o, p) = if owner == Some("n1") { (0, 1) } else { (1, 0) };
    // The owner's room actor is live, with `gone` as a member.
    let mut g = Client::connect(&nodes[o], &gone.token).await;
    let first = g.send_message(&room_id, "before", "before").await;
    assert_eq!(first["type"], "sent", "{first}");

    nodes[o].signal("STOP");
    wait_members(&nodes[p], 1).await;
    // The peer owns the room now; the admin changes its members there.
    let path = format!("/api/v1/rooms/{room_id}/members/{}", gone.user_id);
    let r = call(&nodes[p], "DELETE", &path, Some(&admin.token), None).await;
    assert_eq!(r.status, 204, "{}", r.body);
    let path = format!("/api/v1/rooms/{room_id}/members");
    let body = json!({"username": added.username});
    let r = call(&nodes[p], "POST", &path, Some(&admin.token), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    nodes[o].signal("CONT");
    wait_members(&nodes[p], 2).await;
    let deadline = std::time::Instant::now() + WAIT;
    while metric_in(
        &nodes[o].metrics_text().await,
        "parley_rooms_reloaded_total",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the owner never started its rooms over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let refused = g.send_message(&room_id, "after", "after").await;
    assert_eq!(
        refused["type"], "error",
        "a removed member posted: {refused}"
    );
    assert_eq!(refused["code"], "not_found", "{refused}");
    let mut a = Client::connect(&nodes[o], &added.token).await;
    let sent = a.send_message(&room_id, "hello", "hello").await;
    assert_eq!(sent["type"], "sent", "{sent}");
    assert!(sent["seq"].as_u64() > first["seq"].as_u64());
}

/// Seeds given by host name, as a StatefulSet gives every pod the DNS names
/// of all pods (its own among them): the nodes join, and none dials itself.
/// (ractor_cluster refuses a connection to self with a warning; the join
/// loop used to retry its own name every second, forever.)
#[tokio::test]
async fn seeds_named_by_host_name_join_and_no_node_dials_itself() {
    let dir = data_dir();
    let ports = [free_port(), free_port()];
    let seeds = format!("localhost:{},localhost:{}", ports[0], ports[1]);
    let mut nodes = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let name = format!("n{}", i + 1);
        let extra = ["--cluster-advertise", "127.0.0.1"];
        nodes.push(start_cluster_node(dir.path(), &name, *port, &seeds, &extra).await);
    }
    for node in &nodes {
        wait_members(node, 2).await;
    }
    // Three rounds of the once-a-second join loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        let log = node.stderr_log();
        assert!(
            !log.contains("connection to self"),
            "{} dialled itself:\n{log}",
            node.addr
        );
    }
}

/// A cluster address that names no host is refused before the node opens
/// its store: told `0.0.0.0:PORT`, every peer would dial itself.
#[tokio::test]
async fn a_cluster_address_that_names_no_host_is_refused() {
    let dir = data_dir();
    let port = free_port();
    let any = format!("0.0.0.0:{port}");
    let local = format!("127.0.0.1:{port}");
    // (flags, what the error must say)
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--cluster-listen", &any], "--cluster-advertise IP"),
        (
            vec!["--cluster-listen", &local, "--cluster-advertise", "0.0.0.0"],
            "names no host",
        ),
        (
            vec!["--cluster-advertise", "127.0.0.1"],
            "needs --cluster-listen",
        ),
    ];
    for (args, expected) in cases {
        let err = refused(dir.path(), &args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}
