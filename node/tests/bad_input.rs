//! The bad-input suite against real nodes: malformed, mistyped, oversized,
//! binary and flooding WebSocket frames; missing, forged and expired
//! tokens; malformed and oversized HTTP bodies and heads; unknown endpoints; SQL
//! metacharacters and Unicode edge cases that must round-trip byte for
//! byte; login rate limiting. Each part runs on its own node, and once more
//! all together on one node, which must still serve afterwards with its
//! stored data intact.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use common::*;
use futures_util::FutureExt;
use serde_json::{json, Value};

/// A syntactically valid id that names nothing.
const NO_SUCH_ID: &str = "01900000-0000-7000-8000-000000000000";

/// WebSocket rate limits of the nodes here: a burst large enough for every
/// part's frames, a flood closes once refusals outnumber accepted frames by 20.
const RATE: u32 = 5;
const BURST: u32 = 30;
const CLOSE_AFTER: u32 = 20;
const LOGIN_RATE_PER_USER: u32 = 3;

fn flags() -> Vec<String> {
    [
        "--ws-rate".to_string(),
        RATE.to_string(),
        "--ws-burst".into(),
        BURST.to_string(),
        "--ws-flood-close-after".into(),
        CLOSE_AFTER.to_string(),
        "--login-rate-per-user".into(),
        LOGIN_RATE_PER_USER.to_string(),
    ]
    .into()
}

async fn start(dir: &std::path::Path) -> Node {
    let f = flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    Node::start_with(dir, &f).await
}

/// A node with these WebSocket frame limits (`--ws-rate`, `--ws-burst`,
/// `--ws-flood-close-after`).
async fn start_with_ws_limits(
    dir: &std::path::Path,
    rate: u32,
    burst: u32,
    close_after: u32,
) -> Node {
    let (rate, burst, close_after) = (rate.to_string(), burst.to_string(), close_after.to_string());
    let flags = [
        "--ws-rate",
        rate.as_str(),
        "--ws-burst",
        burst.as_str(),
        "--ws-flood-close-after",
        close_after.as_str(),
    ];
    Node::start_with(dir, &flags).await
}

fn error_code(f: &Value) -> &str {
    f["code"].as_str().unwrap_or("<none>")
}

async fn room_head(node: &Node, user: &User, room_id: &str) -> u64 {
    let r = call(
        node,
        "GET",
        &format!("/api/v1/rooms/{room_id}"),
        Some(&user.token),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["last_seq"].as_u64().expect("last_seq")
}

// ================================================================ parts

/// Malformed and mistyped frames get `invalid_json` / `invalid_request` /
/// `unknown_type`, echo the `ref` when one could be read, create nothing and
/// leave the connection usable.
async fn ws_malformed_frames(node: &Node) {
    let alice = user(node, "alice").await;
    let rid = room_id(&group(node, &alice, "target", &[]).await);
    let mut ws = Client::connect(node, &alice.token).await;

    // Not JSON at all.
    for text in ["{nope", "", "hello", "{\"type\":\"ping\"", "\u{0}"] {
        ws.send_text(text).await;
        let e = ws.expect_error(None).await;
        assert_eq!(error_code(&e), "invalid_json", "{text:?}: {e}");
        assert!(e["message"].is_string());
    }
    // Deep nesting must not blow the parser's stack.
    ws.send_text(&"[".repeat(20_000)).await;
    let e = ws.expect_error(None).await;
    assert!(
        ["invalid_json", "invalid_request"].contains(&error_code(&e)),
        "deep nesting: {e}"
    );
    // JSON but not an object, or no type.
    for text in ["[1,2,3]", "[]", "42", "\"ping\"", "null", "true"] {
        ws.send_text(text).await;
        let e = ws.expect_error(None).await;
        assert_eq!(error_code(&e), "invalid_request", "{text}: {e}");
    }
    ws.send_text(r#"{"ref":"no-type"}"#).await;
    assert_eq!(
        error_code(&ws.expect_error(Some("no-type")).await),
        "invalid_request"
    );
    // A key given twice: refused, never read as its last value (this was a send).
    let twice = format!(
        r#"{{"type":"ping","ref":"twice","type":"send","room_id":"{rid}","client_msg_id":"dup-key","body":"x"}}"#
    );
    ws.send_text(&twice).await;
    let e = ws.expect_error(Some("twice")).await;
    assert_eq!(error_code(&e), "invalid_request", "{e}");
    ws.send_text(r#"{"type":5,"ref":"num-type"}"#).await;
    assert_eq!(
        error_code(&ws.expect_error(Some("num-type")).await),
        "invalid_request"
    );
    ws.send_text(r#"{"type":"ping","ref":5}"#).await;
    let e = ws
        .expect(|f| f["type"] == "error" || f["type"] == "pong")
        .await;
    assert_eq!(e["type"], "error", "a numeric ref is refused: {e}");
    assert_eq!(error_code(&e), "invalid_request");
    ws.ping_pong("p-mid").await;

    // A second connection so the first one's burst is not used up.
    let mut ws = Client::connect(node, &alice.token).await;
    // Known types with wrong or missing fields: invalid_request echoing ref.
    let cases = [
        json!({"type": "read", "ref": "w1", "room_id": rid, "seq": "7"}),
        json!({"type": "read", "ref": "w2", "room_id": rid, "seq": -1}),
        json!({"type": "read", "ref": "w3", "room_id": rid, "seq": 1.5}),
        json!({"type": "delivered", "ref": "w4", "room_id": 7, "seq": 1}),
        json!({"type": "send", "ref": "w5", "room_id": rid, "client_msg_id": "c1", "body": 42}),
        json!({"type": "send", "ref": "w6", "room_id": rid, "client_msg_id": "c1"}),
        json!({"type": "send", "ref": "w7", "client_msg_id": "c1", "body": "hi"}),
        json!({"type": "send", "ref": "w8", "room_id": rid, "client_msg_id": 5, "body": "hi"}),
        json!({"type": "send", "ref": "w9", "room_id": rid, "client_msg_id": "c1", "body": null}),
        json!({"type": "typing", "ref": "w10", "room_id": rid, "active": "yes"}),
        json!({"type": "sync", "ref": "w11", "rooms": [rid]}),
        json!({"type": "sync", "ref": "w12", "rooms": {rid.clone(): "zero"}}),
    ];
    for c in &cases {
        ws.send(c.clone()).await;
        let r = c["ref"].as_str().unwrap();
        let e = ws.expect_error(Some(r)).await;
        assert_eq!(error_code(&e), "invalid_request", "{c}: {e}");
    }
    // One past u64::MAX.
    ws.send_text(&format!(
        r#"{{"type":"read","ref":"w13","room_id":"{rid}","seq":18446744073709551616}}"#
    ))
    .await;
    assert_eq!(
        error_code(&ws.expect_error(Some("w13")).await),
        "invalid_request"
    );
    // Unknown types: unknown_type echoing ref.
    for (t, r) in [("dance", "u1"), ("", "u2"), ("SEND", "u3"), ("send ", "u4")] {
        ws.send(json!({"type": t, "ref": r})).await;
        let e = ws.expect_error(Some(r)).await;
        assert_eq!(error_code(&e), "unknown_type", "type {t:?}: {e}");
    }
    // A lone surrogate is not a valid string.
    ws.send_text(&format!(
        r#"{{"type":"send","ref":"sur","room_id":"{rid}","client_msg_id":"sur","body":"\ud800"}}"#
    ))
    .await;
    let e = ws
        .expect(|f| f["type"] == "error" || f["type"] == "sent")
        .await;
    assert_eq!(e["type"], "error", "lone surrogate: {e}");
    assert!(
        ["invalid_json", "invalid_request"].contains(&error_code(&e)),
        "{e}"
    );
    // The largest seq is fine (clamped to the head), and syncs nothing.
    ws.send(json!({"type": "read", "ref": "max", "room_id": rid, "seq": u64::MAX}))
        .await;
    ws.send(json!({"type": "sync", "ref": "sync-max", "rooms": {rid.clone(): u64::MAX}}))
        .await;
    let done = ws.expect(|f| f["ref"] == "sync-max").await;
    assert_eq!(done["type"], "synced", "{done}");
    ws.ping_pong("p-end").await;
    assert!(
        !ws.take_backlog()
            .iter()
            .any(|f| f["type"] == "error" || f["type"] == "message"),
        "no error for a huge read seq, no messages"
    );
    assert_eq!(
        room_head(node, &alice, &rid).await,
        0,
        "nothing was created"
    );
}

/// A body is 1-4000 characters (not bytes).
async fn ws_body_limits(node: &Node) {
    let alice = user(node, "alice").await;
    let bob = user(node, "bob").await;
    let rid = room_id(&group(node, &alice, "limits", &[&bob]).await);
    let mut a = Client::connect(node, &alice.token).await;
    let mut b = Client::connect(node, &bob.token).await;

    let emoji = "😀".repeat(4000);
    let refused = [
        ("x4001", "x".repeat(4001)),
        ("e4001", format!("{emoji}x")),
        ("empty", String::new()),
    ];
    for (id, body) in &refused {
        let e = a.send_message(&rid, id, body).await;
        assert_eq!(e["type"], "error", "{id}: {e}");
        assert_eq!(error_code(&e), "invalid_request", "{id}: {e}");
        assert_eq!(e["ref"], format!("ref-{id}"));
    }
    for (id, bad) in [("", "empty id"), (&*"i".repeat(129), "long id")] {
        a.send(
            json!({"type": "send", "ref": bad, "room_id": rid, "client_msg_id": id, "body": "x"}),
        )
        .await;
        assert_eq!(
            error_code(&a.expect_error(Some(bad)).await),
            "invalid_request"
        );
    }

    let accepted = [("e4000", emoji.clone()), ("x4000", "x".repeat(4000))];
    for (i, (id, body)) in accepted.iter().enumerate() {
        let ack = a.send_message(&rid, id, body).await;
        assert_eq!(ack["type"], "sent", "{id}: {ack}");
        assert_eq!(ack["seq"], (i + 1) as u64);
        let m = b
            .expect(|f| f["type"] == "message" && f["client_msg_id"] == *id)
            .await;
        assert_eq!(m["body"].as_str().unwrap(), body.as_str());
    }
    let msgs = all_messages(node, &bob, &rid).await;
    assert_eq!(msgs.len(), 2, "only the valid bodies were stored");
    assert_eq!(msgs[0]["body"].as_str().unwrap(), emoji);
    assert_eq!(msgs[1]["body"].as_str().unwrap(), "x".repeat(4000));
}

/// Frames over 64 KiB close the connection with 1009; just under is fine.
async fn ws_oversized_frames(node: &Node) {
    let alice = user(node, "alice").await;
    let rid = room_id(&group(node, &alice, "big", &[]).await);

    // Just under the limit: an ordinary (too long) request, answered.
    let mut ws = Client::connect(node, &alice.token).await;
    let body = "y".repeat(60 * 1024);
    let e = ws.send_message(&rid, "near", &body).await;
    assert_eq!(error_code(&e), "invalid_request", "{e}");
    ws.ping_pong("still-open").await;

    // 100 KiB.
    ws.send_text(&format!(
        r#"{{"type":"send","room_id":"{rid}","client_msg_id":"big","body":"{}"}}"#,
        "z".repeat(100 * 1024)
    ))
    .await;
    assert_eq!(ws.expect_close().await, Some(1009), "100 KiB frame");

    // One byte over 64 KiB.
    let mut ws = Client::connect(node, &alice.token).await;
    ws.send_text(&" ".repeat(64 * 1024 + 1)).await;
    assert_eq!(ws.expect_close().await, Some(1009), "64 KiB + 1 frame");

    // Far beyond (2 MiB): the node reads and drops the rest of the frame
    // after its close frame, so the close frame reaches the client.
    let mut ws = Client::connect(node, &alice.token).await;
    ws.send_text(&"q".repeat(2 * 1024 * 1024)).await;
    assert_eq!(ws.expect_close().await, Some(1009), "2 MiB frame");

    // A binary frame over the limit closes too.
    let mut ws = Client::connect(node, &alice.token).await;
    ws.send_binary(vec![b'b'; 100 * 1024]).await;
    assert_eq!(ws.expect_close().await, Some(1009), "100 KiB binary frame");

    assert_eq!(room_head(node, &alice, &rid).await, 0);
    let mut ws = Client::connect(node, &alice.token).await;
    ws.ping_pong("after").await;
}

/// Binary frames are answered with an error; the connection stays usable.
async fn ws_binary_frames(node: &Node) {
    let alice = user(node, "alice").await;
    let rid = room_id(&group(node, &alice, "bin", &[]).await);
    let mut ws = Client::connect(node, &alice.token).await;
    let frame =
        json!({"type": "send", "ref": "bin", "room_id": rid, "client_msg_id": "b1", "body": "x"});
    ws.send_binary(frame.to_string().into_bytes()).await;
    let e = ws
        .expect(|f| f["type"] == "error" || f["type"] == "sent")
        .await;
    assert_eq!(e["type"], "error", "binary frame: {e}");
    assert!(
        ["invalid_request", "invalid_json"].contains(&error_code(&e)),
        "{e}"
    );
    ws.send_binary(vec![0xff, 0x00, 0xfe]).await;
    let e = ws.expect(|f| f["type"] == "error").await;
    assert!(e["code"].is_string(), "{e}");
    ws.ping_pong("bin-after").await;
    assert_eq!(
        room_head(node, &alice, &rid).await,
        0,
        "nothing was created"
    );
}

/// Rooms that do not exist, are not ids, or belong to others: `not_found`
/// for every kind of request, and nothing happens in them.
async fn ws_foreign_rooms(node: &Node) {
    let alice = user(node, "alice").await;
    let bob = user(node, "bob").await;
    let mallory = user(node, "mallory").await;
    let rid = room_id(&group(node, &alice, "private", &[&bob]).await);
    let mut a = Client::connect(node, &alice.token).await;
    let mut b = Client::connect(node, &bob.token).await;
    let ack = a.send_message(&rid, "secret", "top secret").await;
    assert_eq!(ack["type"], "sent");
    b.expect(|f| f["type"] == "message").await;
    let mut m = Client::connect(node, &mallory.token).await;

    let targets = [
        ("missing", NO_SUCH_ID.to_string()),
        ("garbage", "lol-not-a-room".to_string()),
        ("sql", "x' OR '1'='1".to_string()),
        ("empty", String::new()),
        ("foreign", rid.clone()),
    ];
    let mut messages = Vec::new();
    for (what, target) in &targets {
        let e = m
            .send_message(target, &format!("m-{what}"), "let me in")
            .await;
        assert_eq!(e["type"], "error", "send to {what}: {e}");
        assert_eq!(error_code(&e), "not_found", "send to {what}: {e}");
        messages.push(e["message"].clone());
    }
    assert!(
        messages.iter().all(|x| x == &messages[0]),
        "a foreign room answers like a missing one: {messages:?}"
    );

    m.send(json!({"type": "typing", "room_id": rid, "active": true}))
        .await;
    assert_eq!(error_code(&m.expect_error(None).await), "not_found");
    for (t, r) in [("read", "rd"), ("delivered", "dl")] {
        m.send(json!({"type": t, "ref": r, "room_id": rid, "seq": 1}))
            .await;
        assert_eq!(
            error_code(&m.expect_error(Some(r)).await),
            "not_found",
            "{t}"
        );
    }
    m.send(json!({"type": "read", "ref": "rd2", "room_id": "nope", "seq": 1}))
        .await;
    assert_eq!(error_code(&m.expect_error(Some("rd2")).await), "not_found");
    // Sync of a foreign room replays nothing of it.
    m.send(json!({"type": "sync", "ref": "sy", "rooms": {rid.clone(): 0}}))
        .await;
    let done = m
        .expect(|f| f["type"] == "synced" || (f["type"] == "error" && f["ref"] == "sy"))
        .await;
    if done["type"] == "error" {
        assert_eq!(error_code(&done), "not_found", "{done}");
        // A synced may still follow; give it a moment.
        let _ = tokio::time::timeout(
            Duration::from_millis(500),
            m.expect(|f| f["type"] == "synced"),
        )
        .await;
    } else {
        assert!(
            done["rooms"].get(&rid).is_none(),
            "synced must not reveal the room's head: {done}"
        );
    }
    m.expect_none(Duration::from_millis(300), |f| {
        f["type"] == "message" || f["type"] == "receipt" || f["type"] == "typing"
    })
    .await;

    // The members saw nothing of it, and nothing was stored.
    for ws in [&mut a, &mut b] {
        ws.expect_none(Duration::from_millis(300), |f| {
            (f["type"] == "message" && f["seq"] != 1) || f["user_id"] == mallory.user_id.as_str()
        })
        .await;
    }
    let msgs = all_messages(node, &alice, &rid).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["body"], "top secret");
    let list = call(node, "GET", "/api/v1/rooms", Some(&alice.token), None).await;
    let entry = &list.body["rooms"][0];
    assert_eq!(entry["last_seq"], 1);
    let room = call(
        node,
        "GET",
        &format!("/api/v1/rooms/{rid}"),
        Some(&bob.token),
        None,
    )
    .await;
    assert!(room.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["user_id"] != mallory.user_id.as_str()));
}

/// Over the frame rate: `rate_limited` errors; a client that slows down
/// recovers; one that keeps flooding is closed with 1008.
async fn ws_flood(node: &Node, burst: u32, close_after: u32) {
    let alice = user(node, "alice").await;

    // A short burst over the limit, then slowing down.
    let mut ws = Client::connect(node, &alice.token).await;
    let n = burst + 3;
    for i in 0..n {
        ws.send(json!({"type": "ping", "ref": format!("s{i}")}))
            .await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let mut answered = std::collections::HashSet::new();
    while pongs + limited < n {
        let f = ws
            .expect(|f| f["type"] == "pong" || f["type"] == "error")
            .await;
        if f["type"] == "pong" {
            pongs += 1;
        } else {
            assert_eq!(error_code(&f), "rate_limited", "{f}");
            limited += 1;
        }
        // Refused or not, every request is answered once, under its ref.
        let r = f["ref"].as_str().unwrap_or_default().to_string();
        assert!(answered.insert(r), "{f}");
    }
    let want: std::collections::HashSet<String> = (0..n).map(|i| format!("s{i}")).collect();
    assert_eq!(answered, want, "each ref answered exactly once");
    assert!(limited >= 1, "{n} frames at once must hit the limit");
    assert!(pongs >= burst, "the burst is allowed: {pongs} pongs");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.ping_pong("recovered").await;

    // A flood that goes on: closed with 1008.
    let mut ws = Client::connect(node, &alice.token).await;
    let mut sent = 0;
    for i in 0..burst + close_after {
        if !ws
            .try_send_text(&format!(r#"{{"type":"ping","ref":"f{i}"}}"#))
            .await
        {
            break;
        }
        sent += 1;
    }
    let mut rounds = 0;
    let code = loop {
        match ws.read(Duration::from_secs(1)).await {
            Read::Frame(f) => {
                if f["type"] == "error" {
                    assert_eq!(error_code(&f), "rate_limited", "{f}");
                }
            }
            Read::Closed(c) => break c,
            Read::Timeout => {
                // Tokens came back in between; flood again.
                rounds += 1;
                assert!(rounds < 5, "a flood of {sent} frames was never closed");
                for i in 0..close_after {
                    if !ws
                        .try_send_text(&format!(r#"{{"type":"ping","ref":"g{i}"}}"#))
                        .await
                    {
                        break;
                    }
                    sent += 1;
                }
            }
        }
    };
    assert_eq!(code, Some(1008), "flood close code after {sent} frames");

    // Others (and the same user) are unaffected.
    let mut ws = Client::connect(node, &alice.token).await;
    ws.ping_pong("fresh").await;
}

/// Tokens that must be refused: (what, token).
fn bad_tokens(alice: &User, bob: &User) -> Vec<(&'static str, String)> {
    let secret = SECRET.as_bytes();
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let parts: Vec<&str> = alice.token.split('.').collect();
    let bob_forged = token_signed(b"not-the-secret-at-all-000", bob, 600);
    let bob_payload = bob_forged.split('.').nth(1).unwrap();
    vec![
        ("garbage", "garbage".to_string()),
        ("three dots", "a.b.c".to_string()),
        (
            "other secret",
            token_signed(b"another-secret-0123456789", alice, 600),
        ),
        ("expired", token_signed(secret, alice, -3600)),
        ("alg none", jwt_none(&claims_for(alice, 600))),
        (
            "alg none with signature",
            format!(
                "{}.{}",
                jwt_none(&claims_for(alice, 600)).trim_end_matches('.'),
                parts[2]
            ),
        ),
        (
            "claims swapped",
            format!("{}.{}.{}", parts[0], bob_payload, parts[2]),
        ),
        ("signature stripped", format!("{}.{}.", parts[0], parts[1])),
        (
            "alg HS512 header",
            jwt_hs256(
                secret,
                &json!({"alg": "HS512", "typ": "JWT"}),
                &claims_for(alice, 600),
            ),
        ),
        (
            "no sub",
            jwt_hs256(
                secret,
                &hs256,
                &json!({"name": alice.username, "exp": now_secs() + 600}),
            ),
        ),
        (
            "no exp",
            jwt_hs256(
                secret,
                &hs256,
                &json!({"sub": alice.user_id, "name": alice.username}),
            ),
        ),
        ("refresh token", alice.refresh.clone()),
    ]
}

/// Missing, forged and expired tokens: 401 before the upgrade and on HTTP.
async fn auth_refusals(node: &Node) {
    let alice = user(node, "alice").await;
    let bob = user(node, "bob").await;

    // Sanity: our hand-made tokens are right when signed with the secret.
    let good = token_signed(SECRET.as_bytes(), &alice, 600);
    assert_eq!(upgrade_status(node, Some(&good), None).await, 101);
    let me = call(node, "GET", "/api/v1/users/me", Some(&good), None).await;
    assert_eq!(me.status, 200, "forged-with-the-secret token: {}", me.body);
    assert_eq!(me.body["user_id"], alice.user_id.as_str());

    // The real token works in the query and in the header.
    assert_eq!(upgrade_status(node, Some(&alice.token), None).await, 101);
    assert_eq!(upgrade_status(node, None, Some(&alice.token)).await, 101);
    let ws = Client::connect_bearer(node, &alice.token).await;
    assert_eq!(ws.hello["user_id"], alice.user_id.as_str());
    ws.close().await;

    assert_eq!(upgrade_status(node, None, None).await, 401, "no token");
    assert_eq!(upgrade_status(node, Some(""), None).await, 401, "empty");
    for (what, token) in bad_tokens(&alice, &bob) {
        let q = upgrade_status(node, Some(&token), None).await;
        assert_eq!(q, 401, "ws ?token= {what}");
        let h = upgrade_status(node, None, Some(&token)).await;
        assert_eq!(h, 401, "ws bearer header {what}");
        let r = call(node, "GET", "/api/v1/users/me", Some(&token), None).await;
        assert_error(&r, 401, "unauthorized");
        let r = call(node, "GET", "/api/v1/rooms", Some(&token), None).await;
        assert_error(&r, 401, "unauthorized");
    }
    // The refusal before the upgrade is a contract error body too.
    let r = call(node, "GET", "/ws?token=garbage", None, None).await;
    assert_error(&r, 401, "unauthorized");
    let r = call(node, "GET", "/ws", None, None).await;
    assert_error(&r, 401, "unauthorized");

    // HTTP: missing or malformed Authorization.
    let r = call(node, "GET", "/api/v1/users/me", None, None).await;
    assert_error(&r, 401, "unauthorized");
    for header in [
        format!("Basic {}", alice.token),
        "Bearer".to_string(),
        "Bearer ".to_string(),
        alice.token.clone(),
        format!("Token {}", alice.token),
    ] {
        let r = call_raw(
            node,
            "GET",
            "/api/v1/users/me",
            &[("authorization", &header)],
            None,
        )
        .await;
        assert_error(&r, 401, "unauthorized");
    }
}

/// Malformed and mistyped JSON bodies: 400 `invalid_request` JSON errors.
async fn http_malformed_bodies(node: &Node) {
    let alice = user(node, "alice").await;
    let rid = room_id(&group(node, &alice, "r", &[]).await);
    let auth = format!("Bearer {}", alice.token);
    let json_ct = ("content-type", "application/json");
    let with_auth = [json_ct, ("authorization", auth.as_str())];

    let raw_cases: Vec<(&str, String, Vec<u8>, bool)> = vec![
        (
            "POST",
            "/api/v1/auth/register".into(),
            b"{nope".to_vec(),
            false,
        ),
        ("POST", "/api/v1/auth/register".into(), b"".to_vec(), false),
        (
            "POST",
            "/api/v1/auth/register".into(),
            b"[1,2]".to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            br#"{"username":5,"password":true}"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            br#"{"username":"abcdef","password":null}"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            br#"{"username":"abcdef","password":"password1""#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/register".into(),
            vec![b'{', 0xff, 0xfe, b'}'],
            false,
        ),
        (
            "POST",
            "/api/v1/auth/login".into(),
            b"{nope".to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/login".into(),
            br#"{"username":["a"],"password":"x"}"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/refresh".into(),
            br#"{"refresh_token":5}"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/refresh".into(),
            b"nope".to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/logout".into(),
            b"{nope".to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/auth/logout".into(),
            br#"{"refresh_token":[]}"#.to_vec(),
            true,
        ),
        // Arrays of the fields in order: serde would fill the struct.
        (
            "POST",
            "/api/v1/auth/register".into(),
            br#" ["arrayuser","password123"]"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/login".into(),
            br#"["alice","password123"]"#.to_vec(),
            false,
        ),
        (
            "POST",
            "/api/v1/auth/logout".into(),
            br#"["token"]"#.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            br#"["array-room",[]]"#.to_vec(),
            true,
        ),
        ("POST", "/api/v1/rooms".into(), b"{nope".to_vec(), true),
        (
            "POST",
            "/api/v1/rooms".into(),
            br#"{"name":"x","members":"bob"}"#.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            br#"{"name":5,"members":[]}"#.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/rooms".into(),
            br#"{"name":"x","members":[1,2]}"#.to_vec(),
            true,
        ),
        (
            "POST",
            "/api/v1/rooms/direct".into(),
            br#"{"username":["a"]}"#.to_vec(),
            true,
        ),
        ("POST", "/api/v1/rooms/direct".into(), b"{}".to_vec(), true),
        (
            "PATCH",
            format!("/api/v1/rooms/{rid}"),
            br#"{"name":null}"#.to_vec(),
            true,
        ),
        (
            "POST",
            format!("/api/v1/rooms/{rid}/members"),
            b"{}".to_vec(),
            true,
        ),
        (
            "PUT",
            format!("/api/v1/rooms/{rid}/members/{}/role", alice.user_id),
            br#"{"role":1}"#.to_vec(),
            true,
        ),
    ];
    for (method, path, body, authed) in raw_cases {
        let headers: &[(&str, &str)] = if authed { &with_auth } else { &[json_ct] };
        let r = call_raw(node, method, &path, headers, Some(body.clone())).await;
        assert!(
            r.status == 400,
            "{method} {path} {:?}: {} {}",
            String::from_utf8_lossy(&body),
            r.status,
            r.body
        );
        assert_error(&r, 400, "invalid_request");
    }
    // No content type at all, or not JSON's.
    let r = call_raw(
        node,
        "POST",
        "/api/v1/auth/register",
        &[],
        Some(br#"{"username":"abcdef","password":"password1"}"#.to_vec()),
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    let text = [
        ("content-type", "text/plain"),
        ("authorization", auth.as_str()),
    ];
    let logout = json!({"refresh_token": alice.refresh}).to_string();
    let r = call_raw(
        node,
        "POST",
        "/api/v1/auth/logout",
        &text,
        Some(logout.into_bytes()),
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    // A JSON type with parameters is JSON; the refresh token still works
    // (the refused logout revoked nothing).
    let refresh = json!({"refresh_token": alice.refresh}).to_string();
    let r = call_raw(
        node,
        "POST",
        "/api/v1/auth/refresh",
        &[("content-type", "application/json; charset=utf-8")],
        Some(refresh.into_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Query strings of the wrong type.
    for q in ["?limit=abc", "?before_seq=-1", "?after_seq=x&limit=5"] {
        let r = history(node, &alice, &rid, q).await;
        assert_error(&r, 400, "invalid_request");
    }
    // Nothing was created by any of it.
    let rooms = call(node, "GET", "/api/v1/rooms", Some(&alice.token), None).await;
    assert_eq!(rooms.body["rooms"].as_array().unwrap().len(), 1);
    let name = call(
        node,
        "GET",
        &format!("/api/v1/rooms/{rid}"),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(name.body["name"], "r");
}

/// Bodies over 64 KiB: 413 `too_large` JSON errors, on every endpoint.
async fn http_oversized_bodies(node: &Node) {
    let alice = user(node, "alice").await;
    let auth = format!("Bearer {}", alice.token);
    let big_name = json!({"username": "x".repeat(70 * 1024), "password": "password1"}).to_string();
    let big_room = json!({"name": "n".repeat(100 * 1024), "members": []}).to_string();
    let big_token = json!({"refresh_token": "a".repeat(100 * 1024)}).to_string();
    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("POST", "/api/v1/auth/register", big_name.clone(), false),
        ("POST", "/api/v1/auth/login", big_name, false),
        ("POST", "/api/v1/auth/refresh", big_token.clone(), false),
        ("POST", "/api/v1/rooms", big_room, true),
        ("POST", "/api/v1/auth/logout", big_token, true),
    ];
    for (method, path, body, authed) in cases {
        let mut headers = vec![("content-type", "application/json")];
        if authed {
            headers.push(("authorization", auth.as_str()));
        }
        let r = call_raw(node, method, path, &headers, Some(body.into_bytes())).await;
        assert_eq!(
            r.status, 413,
            "{method} {path} with a 70+ KiB body: {}",
            r.body
        );
        assert!(
            r.body["error"].is_object(),
            "{method} {path} with a 70+ KiB body: 413 answered with {:?} (content-type {:?}), not a contract error",
            r.body,
            r.headers.get("content-type")
        );
        assert_error(&r, 413, "too_large");
    }
}

/// Unknown endpoints: 404 `not_found` JSON.
async fn http_unknown_endpoints(node: &Node) {
    let alice = user(node, "alice").await;
    for (method, path) in [
        ("GET", "/api/v1/nope"),
        ("GET", "/api/v2/rooms"),
        ("POST", "/api/v1/rooms/x/y/z"),
        ("GET", "/api/v1/users/me/extra"),
        ("GET", "/nope/deeper"),
        ("GET", "/no-such-file.js"),
        ("DELETE", "/api/v1/everything"),
    ] {
        let r = call(node, method, path, Some(&alice.token), None).await;
        assert_error(&r, 404, "not_found");
    }
}

/// A known path with a method it does not take still answers a contract
/// error body (the contract: every 4xx body is `{"error":{...}}`).
async fn http_wrong_methods(node: &Node) {
    let alice = user(node, "alice").await;
    for (method, path) in [
        ("DELETE", "/api/v1/auth/login"),
        ("GET", "/api/v1/auth/register"),
        ("PUT", "/api/v1/rooms"),
        ("POST", "/health"),
    ] {
        let r = call(node, method, path, Some(&alice.token), None).await;
        assert!(
            (400..500).contains(&r.status),
            "{method} {path}: {}",
            r.status
        );
        assert!(
            r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
            "{method} {path} answered {} with body {:?} (not a contract error)",
            r.status,
            r.body
        );
    }
}

/// Sends `request` over a fresh TCP connection and reads the answer to
/// the end (the node closes after these answers): (status, head, body).
async fn raw_http(node: &Node, request: &[u8]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(&node.addr).await.unwrap();
    // The node may answer and close before it has read all of a huge head.
    let _ = socket.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer));
    let _ = read.await.expect("the node did not close after its answer");
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Requests the HTTP layer cannot parse (a malformed head, a URI over
/// 64 KiB, too many or too large header fields) still answer with the
/// contract's JSON error body.
async fn http_unparseable_heads(node: &Node) {
    let many_headers: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "a URI over 64 KiB",
            format!(
                "GET /api/v1/{} HTTP/1.1\r\nhost: x\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            431,
            "too_large",
        ),
        (
            "a 64 KB header (over the 16 KiB a head may take)",
            format!(
                "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(64_000)
            )
            .into_bytes(),
            431,
            "too_large",
        ),
        (
            "150 header fields",
            format!("GET /api/v1/rooms HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
            "too_large",
        ),
        // Well over the limit: a head only a little over it can still be
        // parsed whole when it arrives in big reads, and is then served.
        (
            "a 2 MB header",
            format!(
                "GET /health HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
                "a".repeat(2_000_000)
            )
            .into_bytes(),
            431,
            "too_large",
        ),
        (
            "not HTTP",
            b"GARBAGE\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a header line without a colon",
            b"GET /health HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
        (
            "a malformed content-length",
            b"POST /api/v1/auth/login HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n".to_vec(),
            400,
            "invalid_request",
        ),
    ];
    for (what, request, status, code) in cases {
        let (got, head, body) = raw_http(node, &request).await;
        assert_eq!(got, status, "{what}: answered {head:?}");
        let json: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{what}: body {body:?} is not JSON ({e})"));
        assert_eq!(json["error"]["code"], code, "{what}: {json}");
        assert!(json["error"]["message"].is_string(), "{what}: {json}");
        let length = format!("content-length: {}", body.len());
        assert!(
            head.to_ascii_lowercase().contains(&length),
            "{what}: {head:?}"
        );
    }
    // A malformed second request on a kept-alive connection: the first
    // answer is the router's, the second hyper's, both whole.
    let two = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\nGARBAGE\r\n\r\n";
    let (status, _, rest) = raw_http(node, two).await;
    assert_eq!(status, 200);
    assert!(
        rest.contains("HTTP/1.1 400 ") && rest.ends_with(r#""message":"malformed HTTP request"}}"#),
        "second answer: {rest:?}"
    );
}

/// Bodies that must round-trip byte for byte.
fn nasty_bodies() -> Vec<String> {
    [
        "'; DROP TABLE messages; --",
        "Robert'); DROP TABLE users;--",
        "\" OR \"1\"=\"1\" --",
        "1; DELETE FROM rooms WHERE 1=1; SELECT * FROM users",
        "back\\slash \\\\ \\n \\u0000 \\x00 literally",
        "100% _under_ score %% LIKE '%a_' ESCAPE '\\'",
        "😀👍🏽🇺🇸 🏳️‍🌈",
        "👨‍👩‍👧‍👦 zero\u{200B}width\u{200D}joiner\u{FEFF}bom",
        "مرحبا بالعالم — שלום עולם",
        "\u{202E}override\u{202C} \u{200F}rtl mark",
        "e\u{0301} a\u{0300}\u{0323} Z\u{0334}\u{0321}\u{032a}a\u{0337}l\u{0336}g\u{0335}o\u{0338}",
        "nul\u{0000}byte",
        "\u{0000}",
        "tab\tnewline\ncr\r\n\u{7f}\u{1b}[31m",
        "<script>alert(1)</script><img src=x onerror=alert(1)>",
        "\u{FFFF}\u{10FFFF}\u{FFFD}",
        "  leading and trailing spaces  ",
        "𝕳𝖊𝖑𝖑𝖔 你好 日本語 한국어",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Room names that must round-trip (no control characters allowed in names).
fn nasty_names() -> Vec<String> {
    [
        "'; DROP TABLE rooms; --",
        "\"quoted\" \\ back % percent _ under",
        "😀 مرحبا e\u{0301} 👨‍👩‍👧",
        "\u{202E}gnp.exe",
        "Robert'); DELETE FROM members;--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// SQL metacharacters and Unicode edge cases are stored and returned byte
/// for byte: live, in history, in sync; room names too. Names with SQL
/// metacharacters are not valid usernames.
async fn sql_and_unicode(node: &Node) {
    let alice = user(node, "alice").await;
    let bob = user(node, "bob").await;
    let rid = room_id(&group(node, &alice, "unicode", &[&bob]).await);
    let mut a = Client::connect(node, &alice.token).await;
    let mut b = Client::connect(node, &bob.token).await;

    let bodies = nasty_bodies();
    let ids: Vec<String> = (0..bodies.len()).map(|i| format!("q'\"%_;--{i}")).collect();
    for (i, body) in bodies.iter().enumerate() {
        let ack = a.send_message(&rid, &ids[i], body).await;
        assert_eq!(ack["type"], "sent", "body {body:?}: {ack}");
        assert_eq!(ack["seq"], (i + 1) as u64);
        assert_eq!(ack["client_msg_id"], ids[i].as_str());
    }
    for ws in [&mut a, &mut b] {
        let live = ws.messages_until(&rid, bodies.len() as u64).await;
        assert_eq!(live.len(), bodies.len());
        for (m, body) in live.iter().zip(&bodies) {
            assert_eq!(m["body"].as_str().unwrap(), body.as_str(), "live event");
        }
    }
    // Resending an id full of metacharacters dedups.
    let again = a.send_message(&rid, &ids[0], &bodies[0]).await;
    assert_eq!(again["seq"], 1, "{again}");

    let stored = all_messages(node, &bob, &rid).await;
    assert_eq!(stored.len(), bodies.len());
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(
            m["body"].as_str().unwrap().as_bytes(),
            bodies[i].as_bytes(),
            "history body {i}"
        );
        assert_eq!(m["client_msg_id"], ids[i].as_str());
        assert_eq!(m["sender_name"], alice.username.as_str());
    }
    // Sync replays them the same.
    let mut b2 = Client::connect(node, &bob.token).await;
    b2.send(json!({"type": "sync", "ref": "s", "rooms": {rid.clone(): 0}}))
        .await;
    let replay = b2.messages_until(&rid, bodies.len() as u64).await;
    for (m, body) in replay.iter().zip(&bodies) {
        assert_eq!(m["body"].as_str().unwrap(), body.as_str(), "sync");
    }

    // Room names.
    for name in nasty_names() {
        let room = group(node, &alice, &name, &[&bob]).await;
        assert_eq!(room["name"].as_str().unwrap(), name, "create answer");
        let id = room_id(&room);
        let ev = b
            .expect(|f| f["type"] == "room" && f["room"]["room_id"] == id.as_str())
            .await;
        assert_eq!(ev["room"]["name"].as_str().unwrap(), name, "room event");
        let got = call(
            node,
            "GET",
            &format!("/api/v1/rooms/{id}"),
            Some(&bob.token),
            None,
        )
        .await;
        assert_eq!(got.body["name"].as_str().unwrap(), name, "GET room");
        let renamed = format!("{name} ✓ %_'\"");
        let r = call(
            node,
            "PATCH",
            &format!("/api/v1/rooms/{id}"),
            Some(&alice.token),
            Some(json!({"name": renamed})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["name"].as_str().unwrap(), renamed);
        let list = call(node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
        let entry = list.body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["room_id"] == id.as_str())
            .cloned()
            .unwrap();
        assert_eq!(entry["name"].as_str().unwrap(), renamed, "GET /rooms");
    }
    // Control characters are not allowed in room names.
    for bad in ["nul\u{0000}name", "new\nline", "bell\u{7}"] {
        let r = call(
            node,
            "POST",
            "/api/v1/rooms",
            Some(&alice.token),
            Some(json!({"name": bad, "members": []})),
        )
        .await;
        assert_error(&r, 400, "invalid_request");
    }

    // Ids made of SQL in paths name nothing.
    for path in [
        "/api/v1/rooms/%27%20OR%20%271%27%3D%271",
        "/api/v1/rooms/1%3B%20DROP%20TABLE%20rooms/messages",
        "/api/v1/users/%27%20OR%201%3D1%20--",
    ] {
        let r = call(node, "GET", path, Some(&alice.token), None).await;
        assert_error(&r, 404, "not_found");
    }

    // Usernames with SQL metacharacters are refused everywhere.
    for bad in [
        "x'; DROP TABLE users; --",
        "admin'--",
        "a\" OR \"1\"=\"1",
        "bob%",
        "al\u{0000}ice",
        "😀😀😀",
    ] {
        let r = call(
            node,
            "POST",
            "/api/v1/auth/register",
            None,
            Some(json!({"username": bad, "password": "password123"})),
        )
        .await;
        assert_error(&r, 400, "invalid_request");
        let r = call(
            node,
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": bad, "password": "password123"})),
        )
        .await;
        assert_error(&r, 401, "unauthorized");
        let r = call(
            node,
            "POST",
            "/api/v1/rooms",
            Some(&alice.token),
            Some(json!({"name": "x", "members": [bad]})),
        )
        .await;
        assert_error(&r, 400, "invalid_request");
        let r = call(
            node,
            "POST",
            "/api/v1/rooms/direct",
            Some(&alice.token),
            Some(json!({"username": bad})),
        )
        .await;
        assert!(
            r.status == 404 || r.status == 400,
            "direct {bad:?}: {}",
            r.status
        );
        assert_error(
            &r,
            r.status,
            if r.status == 404 {
                "not_found"
            } else {
                "invalid_request"
            },
        );
    }
    // The users are all still there.
    login(node, &alice.username, &alice.password).await;
    login(node, &bob.username, &bob.password).await;
}

/// Failed logins per username are limited: 429 with Retry-After.
async fn login_rate_limit(node: &Node, per_user: u32) {
    let victim = unique("victim");
    let r = call(
        node,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(json!({"username": victim, "password": "password123"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let attempt = |name: String, pw: &'static str| async move {
        call(
            node,
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"username": name, "password": pw})),
        )
        .await
    };
    for i in 0..per_user {
        let r = attempt(victim.clone(), "wrong-password").await;
        assert_error(&r, 401, "unauthorized");
        let _ = i;
    }
    let r = attempt(victim.clone(), "wrong-password").await;
    assert_error(&r, 429, "rate_limited");
    let secs = retry_after_secs(&r.headers);
    assert!((1..=120).contains(&secs), "Retry-After {secs}");
    // Even the right password waits, in any case of the name.
    let r = attempt(victim.clone(), "password123").await;
    assert_error(&r, 429, "rate_limited");
    let r = attempt(victim.to_ascii_uppercase(), "password123").await;
    assert_error(&r, 429, "rate_limited");
    // Other users are unaffected.
    let other = user(node, "other").await;
    assert!(!other.token.is_empty());
}

// ================================================================ tests

#[tokio::test]
async fn ws_malformed_frames_get_the_right_error_codes() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    ws_malformed_frames(&node).await;
}

#[tokio::test]
async fn ws_body_length_is_counted_in_characters() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    ws_body_limits(&node).await;
}

#[tokio::test]
async fn ws_oversized_frames_close_with_1009() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    ws_oversized_frames(&node).await;
}

#[tokio::test]
async fn ws_binary_frames_are_refused() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    ws_binary_frames(&node).await;
}

#[tokio::test]
async fn ws_missing_foreign_or_bogus_rooms_are_not_found_and_untouched() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    ws_foreign_rooms(&node).await;
}

#[tokio::test]
async fn ws_floods_are_rate_limited_then_closed_with_1008() {
    let dir = data_dir();
    let node = start_with_ws_limits(dir.path(), 5, 5, 20).await;
    ws_flood(&node, 5, 20).await;
}

/// A flood paced so that a frame gets through now and then (50 frames a
/// second against a rate of 5: about nine refused for each accepted) is
/// closed with 1008 too: an accepted frame takes back one refusal, not all.
#[tokio::test]
async fn a_paced_flood_is_closed_with_1008() {
    let dir = data_dir();
    let node = start_with_ws_limits(dir.path(), 5, 5, 20).await;
    let alice = user(&node, "alice").await;
    let mut ws = Client::connect(&node, &alice.token).await;
    let started = std::time::Instant::now();
    let mut i = 0;
    let code = 'flood: loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a paced flood of {i} frames was never closed"
        );
        if !ws
            .try_send_text(&format!(r#"{{"type":"ping","ref":"p{i}"}}"#))
            .await
        {
            break ws.expect_close().await;
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        loop {
            match ws.read(Duration::from_millis(1)).await {
                Read::Frame(_) => {}
                Read::Closed(c) => break 'flood c,
                Read::Timeout => break,
            }
        }
    };
    assert_eq!(code, Some(1008));
}

/// WebSocket ping and pong control frames count against the frame rate
/// too (the library answers every ping with a pong): a few are fine, a
/// flood of them is closed with 1008 like a flood of text frames.
#[tokio::test]
async fn ws_control_frame_floods_are_closed_with_1008() {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Bytes;
    let dir = data_dir();
    let node = start_with_ws_limits(dir.path(), 5, 5, 20).await;
    let alice = user(&node, "alice").await;
    let mut ws = Client::connect(&node, &alice.token).await;
    for _ in 0..3 {
        ws.send_frame(Frame::ping(Bytes::from_static(b"hi"))).await;
    }
    ws.ping_pong("a few pings are fine").await;

    let mut flood = Client::connect(&node, &alice.token).await;
    for i in 0..200 {
        let frame = if i % 2 == 0 {
            Frame::ping(Bytes::from_static(b"x"))
        } else {
            Frame::pong(Bytes::from_static(b"x"))
        };
        flood.send_frame(frame).await;
    }
    assert_eq!(flood.expect_close().await, Some(1008));
    let metrics = node.metrics_text().await;
    assert_eq!(metric_in(&metrics, "parley_ws_flood_closes_total"), 1);
    ws.ping_pong("the other session goes on").await;
}

/// A flood closed with 1008 loses nothing that was within the budget: the
/// `send`s before the limit are committed, once each and in order (they
/// were dropped with the session before).
#[tokio::test]
async fn a_flood_closed_with_1008_keeps_the_sends_within_its_budget() {
    let dir = data_dir();
    let node = start_with_ws_limits(dir.path(), 5, 10, 5).await;
    let alice = user(&node, "alice").await;
    let room = room_id(&group(&node, &alice, "flood", &[]).await);
    let mut ws = Client::connect(&node, &alice.token).await;
    let frames: Vec<Value> = (0..15)
        .map(|i| json!({"type": "send", "ref": format!("r{i}"), "room_id": room, "client_msg_id": format!("f{i}"), "body": format!("b{i}")}))
        .collect();
    ws.send_together(&frames).await;
    assert_eq!(ws.expect_close().await, Some(1008));
    let want: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let ids: Vec<String> = all_messages(&node, &alice, &room)
            .await
            .iter()
            .map(|m| m["client_msg_id"].as_str().unwrap_or_default().to_string())
            .collect();
        if ids == want {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "stored: {ids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client that goes on sending after the node closed it (a flood, or
/// frames after an oversized one) can still write for a while, and reads
/// the close code: the node reads and drops what keeps coming before it
/// lets the socket go. Before, the node dropped the socket with input
/// unread or still coming, the kernel answered with a reset, the client's
/// next write failed, and a client library that stops there (as most do)
/// never read the close frame waiting for it (it saw 1006, no code).
#[tokio::test]
async fn a_client_that_keeps_sending_after_its_close_still_reads_the_code() {
    let dir = data_dir();
    let node = start_with_ws_limits(dir.path(), 5, 5, 20).await;
    let alice = user(&node, "alice").await;
    // Frames spread over about half a second, so most are written after
    // the node has closed (it does after 25).
    async fn keep_sending(ws: &mut Client) {
        for i in 0..200 {
            ws.send_text(&format!(r#"{{"type":"ping","ref":"p{i}"}}"#))
                .await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for round in 0..3 {
        // A flood that does not stop to read.
        let mut ws = Client::connect(&node, &alice.token).await;
        keep_sending(&mut ws).await;
        assert_eq!(ws.expect_close().await, Some(1008), "flood, round {round}");

        // An oversized frame, then more frames.
        let mut ws = Client::connect(&node, &alice.token).await;
        ws.send_text(&"z".repeat(100 * 1024)).await;
        keep_sending(&mut ws).await;
        assert_eq!(
            ws.expect_close().await,
            Some(1009),
            "oversized, round {round}"
        );
    }
    let mut ws = Client::connect(&node, &alice.token).await;
    ws.ping_pong("after").await;
}

/// Frames that break the WebSocket protocol close the connection with
/// RFC 6455's code and a reason (they closed with 1000, or 1009 for a big
/// ping), are counted, and the node goes on serving.
#[tokio::test]
async fn ws_protocol_errors_close_with_1002_or_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    use tokio_tungstenite::tungstenite::Bytes;
    let dir = data_dir();
    let node = start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let frame = |opcode, is_final, payload: &[u8]| {
        let header = FrameHeader {
            is_final,
            opcode,
            ..FrameHeader::default()
        };
        Frame::from_payload(header, Bytes::copy_from_slice(payload))
    };
    let ping = OpCode::Control(Control::Ping);
    let cases = [
        (
            "text that is not UTF-8",
            frame(OpCode::Data(Data::Text), true, &[0x41, 0xff, 0xfe]),
            1007,
        ),
        (
            "a reserved opcode",
            frame(OpCode::Data(Data::Reserved(3)), true, b"x"),
            1002,
        ),
        ("a ping of 200 bytes", frame(ping, true, &[b'p'; 200]), 1002),
        ("a fragmented ping", frame(ping, false, b"p"), 1002),
    ];
    let n = cases.len() as u64;
    for (what, frame, code) in cases {
        let mut ws = Client::connect(&node, &alice.token).await;
        ws.send_frame(frame).await;
        assert_eq!(ws.expect_close().await, Some(code), "{what}");
    }
    let mut ws = Client::connect(&node, &alice.token).await;
    ws.ping_pong("still serving").await;
    let metrics = node.metrics_text().await;
    assert_eq!(
        metric_in(&metrics, "parley_ws_protocol_error_closes_total"),
        n
    );
}

/// A message sent in fragments is refused with 1009 as soon as its parts
/// pass the frame limit, finished or not, and so is a frame whose header
/// announces more than the limit before its payload has come: neither is
/// buffered up to 1 MiB, for as long as the client likes, any more.
#[tokio::test]
async fn unfinished_messages_over_the_limit_close_with_1009() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};
    use tokio_tungstenite::tungstenite::Bytes;
    let dir = data_dir();
    let node = start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let part = |opcode, payload: &[u8]| {
        let header = FrameHeader {
            is_final: false,
            opcode,
            ..FrameHeader::default()
        };
        Frame::from_payload(header, Bytes::copy_from_slice(payload))
    };
    let mut ws = Client::connect(&node, &alice.token).await;
    ws.send_frame(part(OpCode::Data(Data::Text), &[b'a'; 40 * 1024]))
        .await;
    ws.send_frame(part(OpCode::Data(Data::Continue), &[b'b'; 40 * 1024]))
        .await;
    assert_eq!(ws.expect_close().await, Some(1009), "80 KiB in two parts");

    // A header that says 1 MiB, and only the start of the payload.
    let mut raw = tokio::net::TcpStream::connect(node.addr.as_str())
        .await
        .expect("connect");
    let close = big_frame_header_then_wait(&mut raw, &node, &alice.token).await;
    assert_eq!(close, Some(1009), "a 1 MiB frame announced");
    Client::connect(&node, &alice.token)
        .await
        .ping_pong("still serving")
        .await;
}

/// Upgrades `raw` to a WebSocket, sends the header of a 1 MiB masked text
/// frame and 1 KiB of it, and returns the close code the node sends.
async fn big_frame_header_then_wait(
    raw: &mut tokio::net::TcpStream,
    node: &Node,
    token: &str,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upgrade = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        node.addr
    );
    raw.write_all(upgrade.as_bytes()).await.expect("upgrade");
    // FIN + text; masked, 64-bit length of 1 MiB; a zero mask key.
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(&[b'x'; 1024]);
    raw.write_all(&frame).await.expect("frame");
    // Read the 101 answer, hello, and whatever follows, up to a close frame.
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, raw.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
        // A close frame from the server: 0x88, length, then the code.
        if let Some(i) = seen.windows(2).position(|w| w[0] == 0x88 && w[1] >= 2) {
            if seen.len() >= i + 4 {
                return Some(u16::from_be_bytes([seen[i + 2], seen[i + 3]]));
            }
        }
    }
    None
}

#[tokio::test]
async fn missing_forged_and_expired_tokens_are_refused() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    auth_refusals(&node).await;
}

#[tokio::test]
async fn http_malformed_bodies_answer_400_json() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    http_malformed_bodies(&node).await;
}

#[tokio::test]
async fn http_oversized_bodies_answer_413_json() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    http_oversized_bodies(&node).await;
}

#[tokio::test]
async fn http_unknown_endpoints_answer_404_json() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    http_unknown_endpoints(&node).await;
}

#[tokio::test]
async fn http_wrong_methods_answer_contract_errors() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    http_wrong_methods(&node).await;
}

#[tokio::test]
async fn http_unparseable_heads_answer_json_errors() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    http_unparseable_heads(&node).await;
}

#[tokio::test]
async fn sql_metacharacters_and_unicode_round_trip_byte_for_byte() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    sql_and_unicode(&node).await;
}

#[tokio::test]
async fn failed_logins_per_user_are_rate_limited() {
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--login-rate-per-user", "3"]).await;
    login_rate_limit(&node, 3).await;
}

/// `POST /auth/refresh` with `token`.
async fn refresh(node: &Node, token: String) -> Answer {
    let body = json!({ "refresh_token": token });
    call(node, "POST", "/api/v1/auth/refresh", None, Some(body)).await
}

/// Refresh attempts per client IP are limited, valid tokens included; a
/// refused attempt leaves the token it carried unspent.
#[tokio::test]
async fn refresh_attempts_per_ip_are_rate_limited_and_spend_nothing() {
    let dir = data_dir();
    // Two nodes on one store (clusters of their own), each with its own limiter.
    let node = start_cluster_of_one(dir.path(), "n1", &["--refresh-rate-per-ip", "3"]).await;
    let f = flags();
    let f: Vec<&str> = f.iter().map(String::as_str).collect();
    let other = start_cluster_of_one(dir.path(), "n2", &f).await;
    let alice = user(&node, "alice").await;
    for i in 0..3 {
        let r = refresh(&node, format!("bogus-{i}")).await;
        assert_error(&r, 401, "unauthorized");
    }
    let r = refresh(&node, alice.refresh.clone()).await;
    assert_error(&r, 429, "rate_limited");
    let secs = retry_after_secs(&r.headers);
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    // The refused token still works, once, where the budget allows.
    let r = refresh(&other, alice.refresh.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = refresh(&other, alice.refresh.clone()).await;
    assert_error(&r, 401, "unauthorized");
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "<non-text panic>".into())
}

/// Every part above against one node; afterwards the node still serves and
/// what it stored before is unchanged. Parts that fail are reported by name
/// at the end, after the survival checks have run.
#[tokio::test]
async fn node_survives_the_whole_suite_with_data_intact() {
    let dir = data_dir();
    let mut node = start(dir.path()).await;

    // Data stored before the abuse.
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let rid = room_id(&group(&node, &alice, "before", &[&bob]).await);
    let dm = call(
        &node,
        "POST",
        "/api/v1/rooms/direct",
        Some(&alice.token),
        Some(json!({"username": bob.username})),
    )
    .await;
    assert_eq!(dm.status, 201);
    let dm_id = room_id(&dm.body);
    let mut a = Client::connect(&node, &alice.token).await;
    let bodies = [
        "first",
        "'; DROP TABLE messages; --",
        "😀 e\u{301} \u{0}",
        "last",
    ];
    for (i, body) in bodies.iter().enumerate() {
        assert_eq!(
            a.send_message(&rid, &format!("pre{i}"), body).await["type"],
            "sent"
        );
    }
    assert_eq!(a.send_message(&dm_id, "dm0", "psst").await["type"], "sent");
    a.close().await;
    let before_msgs = all_messages(&node, &bob, &rid).await;
    let before_dm = all_messages(&node, &bob, &dm_id).await;
    let before_room = call(
        &node,
        "GET",
        &format!("/api/v1/rooms/{rid}"),
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(before_msgs.len(), bodies.len());

    let mut failures = Vec::new();
    {
        type Part<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;
        let n = &node;
        let parts: Vec<(&str, Part)> = vec![
            ("ws malformed frames", Box::pin(ws_malformed_frames(n))),
            ("ws body limits", Box::pin(ws_body_limits(n))),
            ("ws oversized frames", Box::pin(ws_oversized_frames(n))),
            ("ws binary frames", Box::pin(ws_binary_frames(n))),
            ("ws foreign rooms", Box::pin(ws_foreign_rooms(n))),
            ("ws flood", Box::pin(ws_flood(n, BURST, CLOSE_AFTER))),
            ("auth refusals", Box::pin(auth_refusals(n))),
            ("http malformed bodies", Box::pin(http_malformed_bodies(n))),
            ("http oversized bodies", Box::pin(http_oversized_bodies(n))),
            (
                "http unknown endpoints",
                Box::pin(http_unknown_endpoints(n)),
            ),
            ("http wrong methods", Box::pin(http_wrong_methods(n))),
            (
                "http unparseable heads",
                Box::pin(http_unparseable_heads(n)),
            ),
            ("sql and unicode", Box::pin(sql_and_unicode(n))),
            (
                "login rate limit",
                Box::pin(login_rate_limit(n, LOGIN_RATE_PER_USER)),
            ),
        ];
        for (name, part) in parts {
            if let Err(p) = AssertUnwindSafe(part).catch_unwind().await {
                failures.push(format!("{name}: {}", panic_text(&*p)));
            }
        }
    }

    // Still alive and serving.
    assert!(node.is_running(), "the node process died");
    assert_eq!(call(&node, "GET", "/health", None, None).await.status, 200);
    assert_eq!(call(&node, "GET", "/ready", None, None).await.status, 200);
    let metrics = reqwest::get(node.url("/metrics")).await.unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let alice = login(&node, &alice.username, &alice.password).await;
    let fresh = user(&node, "fresh").await;
    assert!(!fresh.token.is_empty());
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let ack = a.send_message(&rid, "post", "still here").await;
    assert_eq!(ack["type"], "sent", "{ack}");
    assert_eq!(ack["seq"], (bodies.len() + 1) as u64);
    let live = b
        .expect(|f| f["type"] == "message" && f["room_id"] == rid.as_str())
        .await;
    assert_eq!(live["body"], "still here");

    // What was stored before is unchanged.
    let after_msgs = all_messages(&node, &bob, &rid).await;
    assert_eq!(after_msgs.len(), bodies.len() + 1);
    assert_eq!(&after_msgs[..bodies.len()], &before_msgs[..]);
    for (m, body) in after_msgs.iter().zip(bodies) {
        assert_eq!(m["body"].as_str().unwrap(), body);
    }
    assert_eq!(all_messages(&node, &bob, &dm_id).await, before_dm);
    let after_room = call(
        &node,
        "GET",
        &format!("/api/v1/rooms/{rid}"),
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(after_room.body["name"], before_room.body["name"]);
    assert_eq!(after_room.body["members"], before_room.body["members"]);
    assert_eq!(
        after_room.body["created_at"],
        before_room.body["created_at"]
    );

    assert!(
        failures.is_empty(),
        "the node survived, but these parts failed:\n{}",
        failures.join("\n")
    );
}

/// The status line's code a raw request of `head` (without the blank line
/// that ends it) is answered with.
async fn raw_status(node: &Node, head: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(node.addr.as_str())
        .await
        .expect("connect");
    raw.write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(2).any(|w| w == b"\r\n") {
        match tokio::time::timeout(WAIT, raw.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => panic!("no answer to {head:?}"),
        }
    }
    let line = String::from_utf8_lossy(&seen).to_string();
    line.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"))
}

/// With a valid token, a request that cannot become a WebSocket is 400
/// `invalid_request` (not a HEAD answered 101 and a session started), and
/// the header forms RFC 6455 allows are accepted.
#[tokio::test]
async fn requests_that_cannot_become_websockets_are_refused_with_400() {
    let dir = data_dir();
    let node = start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let path = format!("/ws?token={}", alice.token);
    let r = call(&node, "GET", &path, None, None).await;
    assert_error(&r, 400, "invalid_request");
    let head = |method: &str, extra: &str| {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}",
            node.addr
        )
    };
    let good = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13";
    assert_eq!(raw_status(&node, &head("GET", good)).await, 101);
    assert_eq!(raw_status(&node, &head("HEAD", good)).await, 400, "HEAD");
    for (what, extra) in [
        (
            "version 8",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8",
        ),
        (
            "no Connection",
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13",
        ),
        (
            "Upgrade: h2c",
            "Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13",
        ),
    ] {
        assert_eq!(raw_status(&node, &head("GET", extra)).await, 400, "{what}");
    }
    for (what, extra) in [
        (
            "Connection listing more than upgrade",
            "upgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-version: 13",
        ),
        (
            "two Connection headers",
            "Upgrade: websocket\r\nConnection: keep-alive\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13",
        ),
    ] {
        assert_eq!(raw_status(&node, &head("GET", extra)).await, 101, "{what}");
    }
    let key_missing = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n{good}", node.addr);
    assert_eq!(raw_status(&node, &key_missing).await, 400, "no key");
}
