//! Protection limits that need special node settings: slow consumers and
//! configuration files.

mod common;

use common::*;
use std::time::Duration;

use serde_json::{json, Value};

/// Alice sends `total` messages of `body` to `room_id`, `batch` at a time,
/// reading back her own before the next batch (so only the others lag).
async fn send_in_batches(a: &mut Client, room_id: &str, body: &str, total: u64, batch: u64) {
    let mut seq = 0;
    while seq < total {
        for i in 0..batch {
            let id = format!("f{}", seq + i);
            a.send(json!({"type": "send", "room_id": room_id, "client_msg_id": id, "body": body}))
                .await;
        }
        seq += batch;
        a.messages_until(room_id, seq).await;
    }
}

/// A node started with `flags` (and no frame rate limit), Alice and Bob in
/// a room named `room`, and Alice connected.
struct BigBodies {
    _dir: tempfile::TempDir,
    node: Node,
    bob: User,
    room_id: String,
    a: Client,
}

impl BigBodies {
    async fn start(flags: &[&str], room: &str) -> Self {
        let dir = data_dir();
        let mut all = vec!["--ws-rate", "0"];
        all.extend_from_slice(flags);
        let node = Node::start_with(dir.path(), &all).await;
        let alice = user(&node, "alice").await;
        let bob = user(&node, "bob").await;
        let room_id = room_id(&group(&node, &alice, room, &[&bob]).await);
        let a = Client::connect(&node, &alice.token).await;
        BigBodies {
            _dir: dir,
            node,
            bob,
            room_id,
            a,
        }
    }

    /// Alice sends 8 KB messages, 10 at a time, reading her own back: what
    /// the kernel's buffers take for a client reading nothing, and `more`
    /// bytes besides.
    async fn send_past_the_kernel(&mut self, more: u64) {
        let body = "ü".repeat(4000);
        let total = (kernel_send_buffer_max() + more) / 8000;
        assert!(total < 2000, "far fewer events than the queue's 4096");
        send_in_batches(&mut self.a, &self.room_id, &body, total, 10).await;
    }
}

#[tokio::test]
async fn a_client_that_cannot_keep_up_is_closed_with_1013() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--outbound-queue", "256", "--ws-rate", "0"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "firehose", &[&bob]).await;
    let room_id = room["room_id"].as_str().unwrap().to_string();
    let mut a = Client::connect(&node, &alice.token).await;
    // Bob connects and then reads nothing while alice sends far more than
    // his socket buffers and his queue can hold.
    let mut b = Client::connect(&node, &bob.token).await;
    send_in_batches(&mut a, &room_id, &"x".repeat(4000), 4000, 50).await;
    assert_eq!(b.expect_close().await, Some(1013));
    // Alice, who kept up, is still served.
    a.send(json!({"type": "ping", "ref": "alive"})).await;
    a.expect(|f| f["type"] == "pong").await;
}

#[tokio::test]
async fn a_client_whose_queue_holds_too_many_bytes_is_closed_with_1013() {
    // Room for 4096 events, but only ~37 of 8 KB.
    let mut t = BigBodies::start(&["--outbound-queue-bytes", "300000"], "big bodies").await;
    // Two sessions of Bob read nothing: one has sent nothing either (its
    // live messages wait for a first `sync`), the other has (they queue).
    let mut waiting = Client::connect(&t.node, &t.bob.token).await;
    let mut queueing = Client::connect(&t.node, &t.bob.token).await;
    queueing.ping_pong("open").await;
    t.send_past_the_kernel(1 << 20).await;
    assert_eq!(waiting.expect_close().await, Some(1013));
    assert_eq!(queueing.expect_close().await, Some(1013));
    // Both are counted, however they overflowed.
    let metrics = t.node.metrics_text().await;
    assert_eq!(metric_in(&metrics, "parley_slow_consumer_closes_total"), 2);
    t.a.ping_pong("alive").await;
}

#[tokio::test]
async fn a_client_far_behind_is_closed_while_the_node_holds_too_many_messages() {
    // Each session may hold 16 MiB, but the node only ~2 MB of messages.
    let mut t = BigBodies::start(&["--max-outbound-message-bytes", "2000000"], "too many").await;
    let mut b = Client::connect(&t.node, &t.bob.token).await;
    b.ping_pong("open").await;
    // 4 MiB for Bob's queue: far less than his session's own limit.
    t.send_past_the_kernel(4 << 20).await;
    assert_eq!(b.expect_close().await, Some(1013));
    // Alice read along and stays.
    t.a.ping_pong("still-here").await;
    let metrics = t.node.metrics_text().await;
    assert_eq!(metric_in(&metrics, "parley_slow_consumer_closes_total"), 1);
}

/// A client that stops reading for longer than the writer waits on one
/// write (15 s) is closed, not kept: it used to keep a session that sent it
/// nothing more, ever, and no close either, so it never knew to reconnect.
#[tokio::test]
async fn a_client_that_takes_nothing_for_15_s_is_disconnected() {
    use futures_util::StreamExt;
    let mut t = BigBodies::start(&[], "stalled").await;
    // Bob's socket has a small receive buffer, and he reads nothing for now.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer");
    let stream = socket
        .connect(t.node.addr.parse().expect("address"))
        .await
        .expect("connect");
    let url = format!("ws://{}/ws?token={}", t.node.addr, t.bob.token);
    let (mut stalled, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    // Far fewer bytes than his queue may hold, more than the kernel takes.
    t.send_past_the_kernel(2 << 20).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // He reads again: what the kernel held, then the end of the connection.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = stalled.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the stalled connection was neither served nor closed"
    );
    let metrics = t.node.metrics_text().await;
    assert_eq!(metric_in(&metrics, "parley_slow_consumer_closes_total"), 1);
    t.a.ping_pong("still-here").await;
}

/// A client that reads nothing keeps its writer waiting in a write (up to
/// 15 s); its queue's overflow ends the session at once all the same, and
/// is counted, without the client reading anything.
#[tokio::test]
async fn a_stuck_writer_is_closed_as_soon_as_its_queue_overflows() {
    let mut t = BigBodies::start(&["--outbound-queue-bytes", "300000"], "stuck").await;
    let mut b = Client::connect(&t.node, &t.bob.token).await;
    b.ping_pong("open").await;
    t.send_past_the_kernel(1 << 20).await;
    // Bob has read nothing since: the close is seen and counted anyway.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let metrics = t.node.metrics_text().await;
        if metric_in(&metrics, "parley_slow_consumer_closes_total") == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no 1013 counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b.expect_close().await, Some(1013));
}

#[tokio::test]
async fn settings_come_from_a_toml_file() {
    let dir = data_dir();
    let file = dir.path().join("parley.toml");
    std::fs::write(
        &file,
        "node-name = \"from-the-file\"\nheartbeat-ms = 12345\n",
    )
    .unwrap();
    let node = Node::start_with(dir.path(), &["--config", file.to_str().unwrap()]).await;
    let alice = user(&node, "alice").await;
    let ws = Client::connect(&node, &alice.token).await;
    assert_eq!(ws.hello["node"], "from-the-file");
    assert_eq!(ws.hello["heartbeat_ms"], 12345);
}

#[tokio::test]
async fn a_misspelled_setting_in_the_toml_file_stops_the_node() {
    let dir = data_dir();
    let file = dir.path().join("parley.toml");
    std::fs::write(&file, "node-name = \"n1\"\nheartbeat-msec = 5000\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_parley-node"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown setting `heartbeat-msec`"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_second_node_on_the_same_data_directory_is_refused_unless_clustered() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    // A second node that starts anyway runs until it is killed (on drop).
    let second = |extra: &[&str]| {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_parley-node"))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .kill_on_drop(true)
            .output();
        async move {
            tokio::time::timeout(WAIT, run)
                .await
                .expect("the second node started")
                .unwrap()
        }
    };
    let clustered = [
        "--cluster-listen",
        "127.0.0.1:0",
        "--cluster-secret",
        "a-cluster-secret-for-tests-only-0123456789",
    ];
    for extra in [&[][..], &clustered[..]] {
        let out = second(extra).await;
        assert!(!out.status.success(), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("another Parley node is using the data directory"),
            "{extra:?}: {stderr}"
        );
    }
    // The first one serves on.
    let alice = user(&node, "alice").await;
    Client::connect(&node, &alice.token)
        .await
        .ping_pong("still")
        .await;
}

/// An upgraded socket, kept open while held.
type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A refused upgrade: status, `Retry-After` seconds, the JSON body.
type Refusal = (u16, u64, Value);

/// Opens a WebSocket for `token`: the open socket, or the refusal.
async fn try_upgrade(node: &Node, token: &str) -> Result<Socket, Refusal> {
    let url = format!("ws://{}/ws?token={}", node.addr, token);
    match tokio_tungstenite::connect_async(url).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let retry = retry_after_secs(resp.headers());
            let body = resp
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((resp.status().as_u16(), retry, body))
        }
        Err(e) => panic!("unexpected ws error: {e}"),
    }
}

#[tokio::test]
async fn one_user_holds_at_most_the_session_cap_and_a_closed_session_frees_its_place() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--max-sessions-per-user", "3"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let room = group(&node, &alice, "capped", &[&bob]).await;
    let room_id = room_id(&room);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Client::connect(&node, &alice.token).await);
    }

    // The fourth is refused before the upgrade, with the contract's 429.
    let Err((status, retry, body)) = try_upgrade(&node, &alice.token).await else {
        panic!("a fourth session must be refused");
    };
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "rate_limited", "body: {body}");
    assert!(retry >= 1);

    // Another user is not affected, and alice's open sessions still work.
    let mut b = Client::connect(&node, &bob.token).await;
    b.send_message(&room_id, "from-bob", "hi").await;
    for c in &mut open {
        c.expect(|f| f["type"] == "message" && f["body"] == "hi")
            .await;
    }

    // A session closed cleanly, and one whose socket was just dropped, each
    // give their place back once the node has seen them go.
    open.pop().expect("three open").close().await;
    drop(open.pop());
    let mut reopened = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while reopened.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "closed sessions did not free their places"
        );
        match try_upgrade(&node, &alice.token).await {
            Ok(socket) => reopened.push(socket),
            Err((429, _, _)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    // Full again: the cap still holds.
    assert!(matches!(
        try_upgrade(&node, &alice.token).await,
        Err((429, _, _))
    ));

    let text = node.metrics_text().await;
    assert!(metric_in(&text, "parley_ws_sessions_refused_total") >= 1);
}

/// One user's API requests past the burst are refused with 429 and a
/// `Retry-After` before anything is done; other users are not affected, and
/// the user is served again once the bucket refills.
#[tokio::test]
async fn a_user_flooding_the_api_is_refused_with_429_and_nothing_is_done() {
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &["--api-rate-per-user", "1", "--api-burst-per-user", "3"],
    )
    .await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    // `user` logged alice in (no access token needed); her bucket is full.
    for _ in 0..3 {
        let a = call(&node, "GET", "/api/v1/rooms", Some(&alice.token), None).await;
        assert_eq!(a.status, 200, "{:?}", a.body);
    }
    // A room creation over the budget: refused, and no room exists.
    let refused = call(
        &node,
        "POST",
        "/api/v1/rooms",
        Some(&alice.token),
        Some(json!({"name": "flood", "members": []})),
    )
    .await;
    assert_error(&refused, 429, "rate_limited");
    let retry = retry_after_secs(&refused.headers);
    assert!(retry >= 1);

    // Bob has his own budget.
    let b = call(&node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
    assert_eq!(b.status, 200);

    // After the wait alice is served again, and the refused room was never made.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let list = call(&node, "GET", "/api/v1/rooms", Some(&alice.token), None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    assert_eq!(list.body["rooms"].as_array().map(Vec::len), Some(0));
    let text = node.metrics_text().await;
    assert!(metric_in(&text, "parley_api_rate_limited_total") >= 1);
}

/// WebSocket upgrades count against the user's API budget like any request
/// with its token: a connect-and-close loop (each cycle announces the user
/// online and offline to everyone sharing a room) was not limited at all.
#[tokio::test]
async fn websocket_upgrades_count_against_the_api_budget() {
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &["--api-rate-per-user", "1", "--api-burst-per-user", "3"],
    )
    .await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    for _ in 0..3 {
        assert_eq!(upgrade_status(&node, Some(&alice.token), None).await, 101);
    }
    assert_eq!(upgrade_status(&node, Some(&alice.token), None).await, 429);
    // Bob has his own budget.
    assert_eq!(upgrade_status(&node, Some(&bob.token), None).await, 101);
    let text = node.metrics_text().await;
    assert!(metric_in(&text, "parley_api_rate_limited_total") >= 1);
}

/// Registers a fresh user with `X-Forwarded-For: forwarded`; the status.
async fn register_from(node: &Node, forwarded: &str) -> u16 {
    let body = json!({"username": unique("ip"), "password": "password123"});
    let r = call_raw(
        node,
        "POST",
        "/api/v1/auth/register",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", forwarded),
        ],
        Some(body.to_string().into_bytes()),
    )
    .await;
    r.status
}

/// Behind a trusted proxy the per-IP limits count the address the proxy
/// forwards; from any other peer the header changes nothing.
#[tokio::test]
async fn per_ip_limits_count_the_forwarded_client_only_behind_a_trusted_proxy() {
    let dir = data_dir();
    let limit = ["--register-rate-per-ip", "2"];
    let behind = Node::start_with(
        dir.path(),
        &[
            limit[0],
            limit[1],
            "--trusted-proxies",
            "10.0.0.0/8,127.0.0.1",
        ],
    )
    .await;
    // Two clients behind the proxy (127.0.0.1 here) each have a budget.
    for _ in 0..2 {
        assert_eq!(register_from(&behind, "203.0.113.7").await, 201);
    }
    assert_eq!(register_from(&behind, "203.0.113.7").await, 429);
    assert_eq!(register_from(&behind, "203.0.113.8").await, 201);
    // An address the client wrote to the left of the real one is not believed.
    assert_eq!(
        register_from(&behind, "198.51.100.1, 203.0.113.7").await,
        429
    );
    // Nor a trusted hop on the right: the client is the last untrusted one.
    assert_eq!(register_from(&behind, "203.0.113.7, 10.1.2.3").await, 429);

    // With no trusted proxy the header is ignored: one budget for the peer.
    let other_dir = data_dir();
    let direct = Node::start_with(other_dir.path(), &limit).await;
    assert_eq!(register_from(&direct, "203.0.113.1").await, 201);
    assert_eq!(register_from(&direct, "203.0.113.2").await, 201);
    assert_eq!(register_from(&direct, "203.0.113.3").await, 429);
}

/// Logs `username` in with `password` from `forwarded` (behind a trusted proxy); the status.
async fn login_from(node: &Node, forwarded: &str, username: &str, password: &str) -> u16 {
    let body = json!({"username": username, "password": password});
    call_raw(
        node,
        "POST",
        "/api/v1/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", forwarded),
        ],
        Some(body.to_string().into_bytes()),
    )
    .await
    .status
}

/// Wrong passwords for a user lock out the address they come from, not the
/// user: anyone could otherwise keep a user from logging in by failing
/// eleven times a minute under their name.
#[tokio::test]
async fn failed_logins_lock_out_their_address_not_the_user() {
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &[
            "--login-rate-per-user",
            "3",
            "--trusted-proxies",
            "127.0.0.1",
        ],
    )
    .await;
    let victim = user(&node, "victim").await;
    for _ in 0..3 {
        let status = login_from(&node, "203.0.113.66", &victim.username, "wrong-password").await;
        assert_eq!(status, 401);
    }
    let status = login_from(&node, "203.0.113.66", &victim.username, &victim.password).await;
    assert_eq!(status, 429, "the attacker's address waits");
    let status = login_from(&node, "198.51.100.20", &victim.username, &victim.password).await;
    assert_eq!(status, 200, "the user logs in from elsewhere");
}

/// Settings the node cannot use are refused by the argument parser at
/// start-up: a node name that would break metric labels and cluster
/// messages, and a duration that overflows the clock (each connection
/// panicked with it).
#[test]
fn unusable_names_and_durations_are_refused_at_start_up() {
    let dir = data_dir();
    for (args, expected) in [
        (&["--node-name", "we\"ird"][..], "--node-name"),
        (&["--node-name", "multi\nline"][..], "--node-name"),
        (&["--node-name", ""][..], "--node-name"),
        (
            &["--http-header-timeout-secs", "18446744073709551615"][..],
            "18446744073709551615 is not in 1..=315360000",
        ),
        (
            &["--cluster-heartbeat-ms", "18446744073709551615"][..],
            "--cluster-heartbeat-ms",
        ),
    ] {
        let err = refused(dir.path(), args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// A shutdown is bounded: a client that stopped halfway through a request
/// head held the exit for the whole header timeout (30 s), past the grace
/// period of container runtimes.
#[tokio::test]
async fn a_half_sent_request_does_not_hold_the_shutdown() {
    use tokio::io::AsyncWriteExt;
    let dir = data_dir();
    let mut node = Node::start(dir.path()).await;
    let mut half = tokio::net::TcpStream::connect(node.addr.as_str())
        .await
        .expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let status = node.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the node took {:?} to stop",
        started.elapsed()
    );
}

/// The most a socket's kernel send buffer grows to (`tcp_wmem`'s maximum):
/// that much of an answer leaves the node even if the client reads nothing.
fn kernel_send_buffer_max() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Asks for `path` as `token` `times` times in a row on a raw connection
/// and never reads the answers: once the kernel's buffers are full, the
/// answer being written stays in the node.
async fn unread_requests(
    node: &Node,
    path: &str,
    token: &str,
    times: u64,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(node.addr.as_str())
        .await
        .expect("connect");
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: parley\r\nAuthorization: Bearer {token}\r\n\r\n");
    socket
        .write_all(head.repeat(times as usize).as_bytes())
        .await
        .expect("write");
    socket
}

/// Waits until the node's unsent-answer gauge is `pages` pages (within a
/// few KB a page) and stays there for half a second: the requests on the
/// unread connections go through passing states (each reserves its most
/// before it reads, and the first answers leave into the kernel's
/// buffers) before the one that stays unread holds its page.
async fn unsent_pages(node: &Node, what: &str, pages: u64, page: u64) {
    let near = |b: u64| b.abs_diff(pages * page) < 20_000 * pages.max(1);
    let deadline = std::time::Instant::now() + WAIT;
    let mut steady = 0;
    while steady < 5 {
        let held = metric_in(&node.metrics_text().await, "parley_unsent_answer_bytes");
        steady = if near(held) { steady + 1 } else { 0 };
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: unsent answer bytes at {held}, not {pages} pages of {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node's unsent-answer gauge satisfies `ok`; returns it.
async fn unsent_bytes(node: &Node, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let held = metric_in(&node.metrics_text().await, "parley_unsent_answer_bytes");
        if ok(held) {
            return held;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: unsent answer bytes stayed at {held}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn answers_clients_do_not_read_are_bounded_per_user_and_per_node() {
    let dir = data_dir();
    // Pages of ~1.65 MB (200 messages of 4,000 two-byte characters). A
    // history request reserves its page's most (201 messages of at most
    // 25 KB: ~5 MB) before reading, settled to the real size once built:
    // a user may hold two unread pages and ask for a third, not hold three
    // and ask; the node may hold three and not ask for a fourth.
    let node = Node::start_with(
        dir.path(),
        &[
            "--ws-rate",
            "0",
            "--api-rate-per-user",
            "0",
            "--max-unsent-bytes-per-user",
            "8000000",
            "--max-unsent-bytes",
            "9000000",
        ],
    )
    .await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let room = room_id(&group(&node, &alice, "big pages", &[&bob, &carol]).await);
    let page = 1_650_000;
    // Enough pages that the kernel's buffers cannot take them all.
    let pages = kernel_send_buffer_max() / page + 2;
    let messages = pages * 200;
    let mut ws = Client::connect(&node, &alice.token).await;
    let body = "ü".repeat(4000);
    for batch in 0..messages / 40 {
        let frames: Vec<Value> = (0..40)
            .map(|i| {
                json!({"type": "send", "ref": format!("r{batch}.{i}"), "room_id": room,
                    "client_msg_id": format!("m{batch}.{i}"), "body": body})
            })
            .collect();
        ws.send_together(&frames).await;
        for i in 0..40 {
            let r = format!("r{batch}.{i}");
            let ack = ws.expect(|f| f["ref"] == r.as_str()).await;
            assert_eq!(ack["type"], "sent", "{ack}");
        }
        ws.take_backlog();
    }
    ws.close().await;
    let path = format!("/api/v1/rooms/{room}/messages?limit=200");
    let full = history(&node, &alice, &room, "?limit=200").await;
    assert_eq!(full.status, 200);
    let size = serde_json::to_vec(&full.body).unwrap().len() as u64;
    assert!(size.abs_diff(page) < 10_000, "page of {size} bytes");
    assert_eq!(unsent_bytes(&node, "at rest", |b| b == 0).await, 0);

    // Alice's two unread pages fit her share; a third answer does not.
    // (One at a time: while one reserves its most, the other would not fit.)
    let a1 = unread_requests(&node, &path, &alice.token, pages).await;
    unsent_pages(&node, "one unread", 1, size).await;
    let a2 = unread_requests(&node, &path, &alice.token, pages).await;
    unsent_pages(&node, "two unread", 2, size).await;
    let refused = history(&node, &alice, &room, "?limit=200").await;
    assert_error(&refused, 429, "rate_limited");
    assert!(retry_after_secs(&refused.headers) >= 1);
    // A small answer still fits in what is left of her share.
    let rooms = call(&node, "GET", "/api/v1/rooms", Some(&alice.token), None).await;
    assert_eq!(rooms.status, 200);

    // Bob has his own share; once he holds a page, the node holds three.
    assert_eq!(history(&node, &bob, &room, "?limit=200").await.status, 200);
    let b1 = unread_requests(&node, &path, &bob.token, pages).await;
    unsent_pages(&node, "three unread", 3, size).await;
    let refused = history(&node, &carol, &room, "?limit=200").await;
    assert_error(&refused, 503, "unavailable");
    assert!(retry_after_secs(&refused.headers) >= 1);

    // A sync nobody reads holds the page it is writing: with two such
    // syncs and her two unread pages, Alice's next sync waits for room
    // without failing, and goes on once she lets an unread answer go.
    drop(b1);
    unsent_pages(&node, "two unread again", 2, size).await;
    let mut stalled = Vec::new();
    for held in [3, 4] {
        let mut s = Client::connect(&node, &alice.token).await;
        s.send(json!({"type": "sync", "ref": "t", "rooms": {room.clone(): 0}}))
            .await;
        unsent_pages(&node, "unread syncs", held, size).await;
        stalled.push(s);
    }
    let mut syncing = Client::connect(&node, &alice.token).await;
    syncing
        .send(json!({"type": "sync", "ref": "s", "rooms": {room.clone(): 0}}))
        .await;
    syncing
        .expect_none(Duration::from_secs(2), |f| {
            f["type"] == "message" || f["type"] == "synced"
        })
        .await;
    drop(a1);
    let replayed = syncing.messages_until(&room, messages).await;
    assert_eq!(replayed.len() as u64, messages);
    let synced = syncing.expect(|f| f["type"] == "synced").await;
    assert_eq!(synced["rooms"][&room], messages);

    // Every byte comes back once the readers are gone.
    drop(a2);
    drop(stalled);
    unsent_bytes(&node, "readers gone", |b| b == 0).await;
    let page_again = history(&node, &carol, &room, "?limit=200").await;
    assert_eq!(page_again.status, 200);
    assert_eq!(page_again.body["messages"].as_array().unwrap().len(), 200);
    syncing.close().await;
}

/// The number in the node's `/proc/<pid>/status` line `field` (`VmRSS`,
/// `Threads`...), without its unit.
fn status_of(node: &Node, field: &str) -> u64 {
    let pid = node.pid().expect("node pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the node's status"))
}

/// The node's peak resident memory so far, in bytes.
fn peak_rss(node: &Node) -> u64 {
    status_of(node, "VmHWM") * 1024
}

#[tokio::test]
async fn a_burst_of_failed_logins_hashes_a_few_at_a_time() {
    let dir = data_dir();
    // 64 MiB per hash: forty at once would hold 2.5 GB.
    let node = Node::start_with(dir.path(), &["--argon2-memory-kib", "65536"]).await;
    let before = peak_rss(&node);
    let logins = (0..40).map(|i| {
        let node = &node;
        async move {
            let body = json!({"username": format!("nobody{i}"), "password": "wrong password"});
            call(node, "POST", "/api/v1/auth/login", None, Some(body)).await
        }
    });
    let answers = futures_util::future::join_all(logins).await;
    for a in &answers {
        assert_error(a, 401, "unauthorized");
    }
    // One hash per CPU runs at a time (and a little besides).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let bound = (cpus + 3).min(20) * (64 << 20);
    let grew = peak_rss(&node).saturating_sub(before);
    assert!(
        grew < bound,
        "the node's peak grew by {} MiB ({cpus} CPUs)",
        grew >> 20
    );
}

/// The node's resident memory now, in bytes.
fn rss(node: &Node) -> u64 {
    status_of(node, "VmRSS") * 1024
}

#[tokio::test]
async fn memory_a_burst_left_free_goes_back_to_the_system() {
    use tokio::io::AsyncWriteExt;
    let dir = data_dir();
    // Bodies unbounded, so that a burst of them takes memory.
    let node = Node::start_with(
        dir.path(),
        &[
            "--memory-trim-secs",
            "1",
            "--max-incoming-body-bytes",
            "0",
            "--max-incoming-body-bytes-per-ip",
            "0",
        ],
    )
    .await;
    let before = rss(&node);
    // 2,000 connections each send 60,000 of a 64,000-byte body and stall.
    let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: parley\r\n\
                Content-Type: application/json\r\nContent-Length: 64000\r\n\r\n";
    let mut stalled = Vec::new();
    for _ in 0..2000 {
        let mut s = tokio::net::TcpStream::connect(&node.addr)
            .await
            .expect("connect");
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&[b' '; 60_000]).await.expect("body");
        stalled.push(s);
    }
    let mut held = rss(&node);
    for _ in 0..100 {
        if held > before + (80 << 20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = rss(&node);
    }
    assert!(
        held > before + (80 << 20),
        "the burst took only {} MiB",
        (held - before) >> 20
    );
    drop(stalled);
    // Once they are gone, what they took goes back (not only to malloc).
    let mut now = held;
    for _ in 0..150 {
        now = rss(&node);
        if now < before + (held - before) / 3 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "resident memory went from {} MiB to {} MiB with the burst and stayed at {} MiB",
        before >> 20,
        held >> 20,
        now >> 20
    );
}

/// The node's threads now.
fn threads(node: &Node) -> u64 {
    status_of(node, "Threads")
}

#[tokio::test]
async fn a_burst_of_reads_does_not_start_a_thread_each() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--api-rate-per-user", "0"]).await;
    let alice = user(&node, "alice").await;
    for i in 0..10 {
        group(&node, &alice, &format!("room {i}"), &[]).await;
    }
    let before = threads(&node);
    // 300 room lists at once, each a read per room.
    let lists = (0..300).map(|_| call(&node, "GET", "/api/v1/rooms", Some(&alice.token), None));
    for r in futures_util::future::join_all(lists).await {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Idle blocking threads stay 10 s: what the burst started is still
    // there. At most 32 on a machine of up to 8 CPUs.
    let after = threads(&node);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        after <= before + (2 * cpus + 16).max(32),
        "the node went from {before} to {after} threads"
    );
}

/// Polls `/metrics` until `name` satisfies `ok`; returns the last value.
async fn metric_until(node: &Node, name: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let v = metric_in(&node.metrics_text().await, name);
        if ok(v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that sends all of a 60 KB frame but its end and stops is closed
/// with 1008 once `--ws-message-timeout-secs` have passed since its first
/// byte, and what it held is given back; a session between messages has no
/// time limit, and a message that comes in pieces within the limit is served.
#[tokio::test]
async fn a_message_left_unfinished_ends_its_connection_after_the_time_limit() {
    use common::raw_ws::{padded_ping, text_header, RawWs};
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--ws-message-timeout-secs", "2"]).await;
    let alice = user(&node, "alice").await;
    let mut idle = Client::connect(&node, &alice.token).await;

    let mut stalled = RawWs::connect(&node, &alice.token).await;
    stalled.write(&text_header(60_000)).await;
    stalled.write(&[b'x'; 59_999]).await;
    let held = metric_until(&node, "parley_unfinished_message_bytes", |v| v > 0).await;
    assert_eq!(held, 60_000, "the message's stated size is reserved");
    let started = std::time::Instant::now();
    assert_eq!(stalled.close_code(WAIT).await, Some(1008));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "closed after the limit, not at once ({:?})",
        started.elapsed()
    );
    assert_eq!(
        metric_until(&node, "parley_unfinished_message_bytes", |v| v == 0).await,
        0
    );
    let text = node.metrics_text().await;
    assert_eq!(metric_in(&text, "parley_ws_unfinished_closes_total"), 1);
    assert_eq!(
        metric_in(&text, "parley_ws_protocol_error_closes_total"),
        0,
        "counted once, as unfinished"
    );

    // Idle past the limit, between messages: still served.
    idle.ping_pong("after the limit").await;

    // 10 KB in four pieces over ~1.2 s: within the limit.
    let mut slow = RawWs::connect(&node, &alice.token).await;
    let frame = padded_ping("slow", 10_000);
    for piece in frame.chunks(frame.len() / 4 + 1) {
        slow.write(piece).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        slow.answered("slow", WAIT).await,
        "a slow but whole message is served"
    );
}

/// Large unfinished messages share `--max-unfinished-message-bytes`: over
/// it, a socket with a large message is not read until room is made, while
/// small messages go on as usual; a user's share holds the user's own
/// sessions back the same way, not other users'.
#[tokio::test]
async fn large_unfinished_messages_wait_for_room_in_the_node_and_the_users_share() {
    use common::raw_ws::{padded_ping, text_header, RawWs};
    let dir = data_dir();
    let node = Node::start_with(
        dir.path(),
        &[
            "--max-unfinished-message-bytes",
            "150000",
            "--max-unfinished-message-bytes-per-user",
            "100000",
        ],
    )
    .await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let quiet = Duration::from_millis(1500);

    // Alice holds 60 KB unfinished: her own next large message waits
    // (share), Bob's does not.
    let mut alice_stalled = RawWs::connect(&node, &alice.token).await;
    alice_stalled.write(&text_header(60_000)).await;
    alice_stalled.write(&[b'x'; 1_000]).await;
    metric_until(&node, "parley_unfinished_message_bytes", |v| v == 60_000).await;
    let mut alice_big = RawWs::connect(&node, &alice.token).await;
    alice_big.write(&padded_ping("alice-big", 50_000)).await;
    assert!(
        !alice_big.answered("alice-big", quiet).await,
        "over Alice's share"
    );
    let mut bob_big = RawWs::connect(&node, &bob.token).await;
    bob_big.write(&padded_ping("bob-big", 50_000)).await;
    assert!(
        bob_big.answered("bob-big", WAIT).await,
        "Bob has his own share"
    );

    // Bob holds 60 KB too (120 KB in all): Carol's large message waits for
    // the node, her small ones do not.
    let mut bob_stalled = RawWs::connect(&node, &bob.token).await;
    bob_stalled.write(&text_header(60_000)).await;
    metric_until(&node, "parley_unfinished_message_bytes", |v| v == 120_000).await;
    let mut carol_big = RawWs::connect(&node, &carol.token).await;
    carol_big.write(&padded_ping("carol-big", 50_000)).await;
    assert!(
        !carol_big.answered("carol-big", quiet).await,
        "over the node"
    );
    Client::connect(&node, &carol.token)
        .await
        .ping_pong("small goes on")
        .await;

    // Bob's message ends (it is not JSON: an error answers it): Carol's goes.
    bob_stalled.write(&[b'x'; 60_000]).await;
    assert!(carol_big.answered("carol-big", WAIT).await, "room made");
    // Alice's ends: her waiting one goes.
    alice_stalled.write(&[b'x'; 59_000]).await;
    assert!(
        alice_big.answered("alice-big", WAIT).await,
        "room made in her share"
    );
    assert_eq!(
        metric_until(&node, "parley_unfinished_message_bytes", |v| v == 0).await,
        0
    );
}
