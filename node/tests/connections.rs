//! Connection-level protection: the request-head timeout (slow headers,
//! idle keep-alive), the bound on request bodies arriving, the cap on open
//! connections, and TCP keepalive for clients that vanish, over real sockets.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: parley\r\n\r\n";

/// A raw TCP connection to the node.
async fn raw(node: &Node) -> TcpStream {
    TcpStream::connect(&node.addr).await.expect("tcp connect")
}

/// A raw TCP connection to the node from the local address `from`.
async fn raw_from(node: &Node, from: std::net::IpAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(from, 0))
        .expect("bind");
    let to = node.addr.parse().expect("node address");
    socket.connect(to).await.expect("tcp connect")
}

/// What a raw socket does next within `wait`.
#[derive(Debug, PartialEq)]
enum Next {
    /// The node sent bytes (starting with these).
    Data(String),
    /// The node closed the connection.
    Closed,
    /// Nothing happened.
    Quiet,
}

async fn next(s: &mut TcpStream, wait: Duration) -> Next {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(wait, s.read(&mut buf)).await {
        Err(_) => Next::Quiet,
        Ok(Ok(0)) | Ok(Err(_)) => Next::Closed,
        Ok(Ok(n)) => Next::Data(String::from_utf8_lossy(&buf[..n]).into_owned()),
    }
}

/// Asserts the node answers `/health` with 200 on `s`.
async fn expect_health(s: &mut TcpStream, wait: Duration) {
    match next(s, wait).await {
        Next::Data(d) => assert!(d.starts_with("HTTP/1.1 200"), "{d}"),
        other => panic!("expected a 200 answer, got {other:?}"),
    }
}

/// `parley_connections_open` and `parley_connections_limited_total`, read
/// over a connection of their own (counted in the first).
async fn connection_metrics(node: &Node) -> (u64, u64) {
    let text = node.metrics_text().await;
    (
        metric_in(&text, "parley_connections_open"),
        metric_in(&text, "parley_connections_limited_total"),
    )
}

/// Waits until only the metrics request itself is open (earlier clients'
/// closes have reached the node).
async fn settle(node: &Node) {
    for _ in 0..200 {
        if connection_metrics(node).await.0 <= 1 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("connections from earlier requests were not closed");
}

#[tokio::test]
async fn a_request_head_that_never_completes_is_cut_off() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--http-header-timeout-secs", "1"]).await;
    let mut slow = raw(&node).await;
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: parl")
        .await
        .expect("write");
    let mut silent = raw(&node).await;
    assert_eq!(next(&mut slow, WAIT).await, Next::Closed);
    assert_eq!(next(&mut silent, WAIT).await, Next::Closed);
    // The node still serves everyone else.
    let mut ok = raw(&node).await;
    ok.write_all(HEALTH).await.expect("write");
    expect_health(&mut ok, WAIT).await;
}

#[tokio::test]
async fn a_body_that_trickles_in_is_refused() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--http-header-timeout-secs", "1"]).await;
    let mut s = raw(&node).await;
    s.write_all(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: parley\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user",
    )
    .await
    .expect("write");
    match next(&mut s, WAIT).await {
        Next::Data(d) => {
            assert!(d.starts_with("HTTP/1.1 400"), "{d}");
            assert!(d.contains("invalid_request"), "{d}");
            assert!(d.contains("not received in time"), "{d}");
        }
        other => panic!("expected a 400 answer, got {other:?}"),
    }
    // The rest of the body never came: the connection is not reused.
    assert_eq!(next(&mut s, WAIT).await, Next::Closed);
}

/// A login body of `len` bytes: a JSON object padded with spaces.
fn login_body(len: usize) -> Vec<u8> {
    let mut body = br#"{"username":"nobody","password":"not-the-password"}"#.to_vec();
    body.resize(len, b' ');
    body
}

/// Opens a connection and sends a login request's head saying its body is
/// `len` bytes, and the first `sent` bytes of that body.
async fn login_body_started(node: &Node, len: usize, sent: usize) -> TcpStream {
    let mut s = raw(node).await;
    let head = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: parley\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    s.write_all(&login_body(len)[..sent])
        .await
        .expect("write body");
    s
}

/// Sends the rest of a body begun by [`login_body_started`].
async fn finish_body(s: &mut TcpStream, len: usize, sent: usize) {
    s.write_all(&login_body(len)[sent..])
        .await
        .expect("write body");
}

/// `parley_incoming_body_bytes` once it reads `want` (bodies reach the
/// budget when their head has been handled).
async fn wait_incoming(node: &Node, want: u64) {
    let mut seen = 0;
    for _ in 0..200 {
        seen = metric_in(&node.metrics_text().await, "parley_incoming_body_bytes");
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("parley_incoming_body_bytes stayed {seen}, expected {want}");
}

/// Asserts `s` gets an answer with `status` and the contract's `code`.
async fn expect_answer(s: &mut TcpStream, status: &str, code: &str) {
    match next(s, WAIT).await {
        Next::Data(d) => {
            assert!(d.starts_with(&format!("HTTP/1.1 {status}")), "{d}");
            assert!(d.contains(code), "{d}");
        }
        other => panic!("expected a {status} answer, got {other:?}"),
    }
}

#[tokio::test]
async fn stalled_bodies_hold_an_address_to_its_share() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--max-incoming-body-bytes-per-ip", "180000"]).await;
    // Three bodies of 60,000 bytes, each stalled a byte short of its end,
    // hold all of the address's 180,000.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(login_body_started(&node, 60_000, 59_999).await);
    }
    wait_incoming(&node, 180_000).await;
    // A fourth is refused before any of it is read; the node holds nothing more.
    let mut fourth = login_body_started(&node, 60_000, 1_000).await;
    match next(&mut fourth, WAIT).await {
        Next::Data(d) => {
            assert!(d.starts_with("HTTP/1.1 429"), "{d}");
            assert!(d.contains("rate_limited"), "{d}");
            assert!(d.to_ascii_lowercase().contains("retry-after: 1"), "{d}");
        }
        other => panic!("expected a 429 answer, got {other:?}"),
    }
    wait_incoming(&node, 180_000).await;
    // A small body (a login) reserves nothing and still goes.
    let small = reqwest::Client::new()
        .post(node.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"username": "nobody", "password": "whatever-it-is"}))
        .send()
        .await
        .expect("login");
    assert_eq!(small.status(), 401);
    // A stalled body that completes is answered and gives its share back.
    let mut first = stalled.remove(0);
    finish_body(&mut first, 60_000, 59_999).await;
    expect_answer(&mut first, "401", "unauthorized").await;
    wait_incoming(&node, 120_000).await;
    drop(stalled);
    wait_incoming(&node, 0).await;
}

#[tokio::test]
async fn a_body_stated_too_large_is_refused_before_it_is_read() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    // Its head says 100,000 bytes; 1,000 come and the rest never does.
    let mut s = login_body_started(&node, 100_000, 1_000).await;
    expect_answer(&mut s, "413", "too_large").await;
}

#[tokio::test]
async fn over_the_node_limit_a_body_waits_for_room_then_is_refused() {
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &[
            "--max-incoming-body-bytes",
            "100000",
            "--max-incoming-body-bytes-per-ip",
            "0",
        ],
    )
    .await;
    let mut holding = login_body_started(&node, 60_000, 59_999).await;
    wait_incoming(&node, 60_000).await;
    // A login's small body never waits for room.
    let mut small = login_body_started(&node, 100, 100).await;
    expect_answer(&mut small, "401", "unauthorized").await;
    // A second body waits while the first holds the room it needs...
    let mut waiting = login_body_started(&node, 60_000, 0).await;
    finish_body(&mut waiting, 60_000, 0).await;
    assert_eq!(
        next(&mut waiting, Duration::from_secs(1)).await,
        Next::Quiet,
        "a body past the node's limit was read at once"
    );
    // ...and goes once the first is read.
    finish_body(&mut holding, 60_000, 59_999).await;
    expect_answer(&mut holding, "401", "unauthorized").await;
    expect_answer(&mut waiting, "401", "unauthorized").await;
    wait_incoming(&node, 0).await;
    // One that finds no room within 5 s is refused.
    let _holding = login_body_started(&node, 60_000, 59_999).await;
    wait_incoming(&node, 60_000).await;
    let mut refused = login_body_started(&node, 60_000, 0).await;
    expect_answer(&mut refused, "503", "unavailable").await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--http-header-timeout-secs", "1"]).await;
    let mut s = raw(&node).await;
    s.write_all(HEALTH).await.expect("write");
    expect_health(&mut s, WAIT).await;
    // Kept alive for the next request, but not forever.
    assert_eq!(next(&mut s, WAIT).await, Next::Closed);
}

#[tokio::test]
async fn a_websocket_is_not_subject_to_the_header_timeout() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--http-header-timeout-secs", "1"]).await;
    let alice = user(&node, "alice").await;
    let mut ws = Client::connect(&node, &alice.token).await;
    // Three timeouts' worth of silence, then the session still answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ws.ping_pong("still-here").await;
}

#[tokio::test]
async fn past_the_cap_a_connection_waits_for_a_place_and_a_websocket_holds_one() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--max-connections", "3"]).await;
    let alice = user(&node, "alice").await;
    settle(&node).await;
    // Three places: one WebSocket and two idle sockets fill them.
    let ws = Client::connect(&node, &alice.token).await;
    let idle = [raw(&node).await, raw(&node).await];
    let mut waiting = raw(&node).await;
    waiting.write_all(HEALTH).await.expect("write");
    assert_eq!(
        next(&mut waiting, Duration::from_secs(1)).await,
        Next::Quiet,
        "a fourth connection was served while three were open"
    );
    // Closing the WebSocket frees its place (the upgraded socket held it).
    ws.close().await;
    expect_health(&mut waiting, WAIT).await;
    drop(waiting);
    drop(idle);
    // Every place is given back. (`settle` allows for its own request: a
    // second read straight after could still count the first's socket,
    // whose close the node may not have seen yet.)
    settle(&node).await;
    let (_, limited) = connection_metrics(&node).await;
    assert!(limited >= 1, "the wait at the cap was not counted");
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_connections() {
    let dir = data_dir();
    // Loopback is left out by default; here only 127.0.0.1 is (the test's
    // own requests), and 127.0.0.2 is capped like any address.
    let node = Node::start_with(
        dir.path(),
        &[
            "--max-connections-per-ip",
            "3",
            "--connection-cap-exempt",
            "127.0.0.1",
        ],
    )
    .await;
    let capped = "127.0.0.2".parse().expect("address");
    let idle = [
        raw_from(&node, capped).await,
        raw_from(&node, capped).await,
        raw_from(&node, capped).await,
    ];
    // The fourth is answered at once, not left waiting, and closed.
    let mut fourth = raw_from(&node, capped).await;
    match next(&mut fourth, WAIT).await {
        Next::Data(d) => {
            assert!(d.starts_with("HTTP/1.1 429"), "{d}");
            assert!(d.contains("retry-after: 10"), "{d}");
            assert!(d.contains("rate_limited"), "{d}");
        }
        other => panic!("expected a 429 answer, got {other:?}"),
    }
    assert_eq!(next(&mut fourth, WAIT).await, Next::Closed);
    // A place given back is a place to take.
    drop(idle);
    settle(&node).await;
    let text = node.metrics_text().await;
    assert_eq!(
        metric_in(&text, "parley_connections_refused_per_ip_total"),
        1
    );
    let mut ok = raw_from(&node, capped).await;
    ok.write_all(HEALTH).await.expect("write");
    expect_health(&mut ok, WAIT).await;
}

#[tokio::test]
async fn loopback_is_not_capped_per_address_by_default() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--max-connections-per-ip", "1"]).await;
    let _idle = [raw(&node).await, raw(&node).await];
    let mut third = raw(&node).await;
    third.write_all(HEALTH).await.expect("write");
    expect_health(&mut third, WAIT).await;
}

/// Alice and Bob in a direct room, both connected, on a node that probes
/// silent connections after 2 s (then every second: failed within about 5 s).
struct Pair {
    _dir: tempfile::TempDir,
    node: Node,
    room_id: String,
    bob: User,
    a: Client,
    b: Client,
}

async fn connected_pair() -> Pair {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--tcp-keepalive-secs", "2"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let dm = call(
        &node,
        "POST",
        "/api/v1/rooms/direct",
        Some(&alice.token),
        Some(serde_json::json!({"username": bob.username})),
    )
    .await;
    assert_eq!(dm.status, 201);
    let mut a = Client::connect(&node, &alice.token).await;
    let b = Client::connect(&node, &bob.token).await;
    a.expect(|f| f["type"] == "presence" && f["status"] == "online")
        .await;
    Pair {
        _dir: dir,
        room_id: room_id(&dm.body),
        node,
        bob,
        a,
        b,
    }
}

/// Waits (up to 30 s) for Alice to see Bob go offline.
async fn expect_offline(a: &mut Client, bob: &User) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match a.read(left).await {
            Read::Frame(f) if f["type"] == "presence" && f["status"] == "offline" => {
                assert_eq!(f["user_id"], bob.user_id.as_str());
                return;
            }
            Read::Frame(_) => continue,
            other => panic!("bob was not seen offline: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_vanishes_goes_offline() {
    let mut p = connected_pair().await;
    // Bob's machine drops off the network: no FIN, no ACK, ever again.
    p.b.vanish();
    expect_offline(&mut p.a, &p.bob).await;
}

#[tokio::test]
async fn a_client_that_vanishes_with_messages_on_the_way_goes_offline() {
    let mut p = connected_pair().await;
    p.b.vanish();
    // Keepalive only probes an idle connection; with a message to Bob
    // unacknowledged, the TCP user timeout is what ends it.
    let ack = p.a.send_message(&p.room_id, "m1", "are you there?").await;
    assert_eq!(ack["type"], "sent");
    expect_offline(&mut p.a, &p.bob).await;
    // The node itself is unharmed.
    assert_eq!(
        call(&p.node, "GET", "/health", None, None).await.status,
        200
    );
}
