//! The HTTP API against real nodes: every row of the client contract
//! (auth, users, rooms, members, roles, history paging, operations
//! endpoints), checking status codes, body shapes and the contract's error
//! bodies, plus the `room` events that HTTP actions push over WebSocket.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A syntactically valid id that names nothing.
const NO_SUCH_ID: &str = "01900000-0000-7000-8000-000000000000";

async fn register(node: &Node, username: &str, password: &str) -> Answer {
    call(
        node,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await
}

async fn login_answer(node: &Node, username: &str, password: &str) -> Answer {
    call(
        node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await
}

async fn refresh(node: &Node, token: &str) -> Answer {
    call(
        node,
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

async fn me(node: &Node, token: &str) -> Answer {
    call(node, "GET", "/api/v1/users/me", Some(token), None).await
}

async fn get_room(node: &Node, user: &User, room_id: &str) -> Answer {
    call(
        node,
        "GET",
        &format!("/api/v1/rooms/{room_id}"),
        Some(&user.token),
        None,
    )
    .await
}

async fn add_member(node: &Node, by: &User, room_id: &str, username: &str) -> Answer {
    call(
        node,
        "POST",
        &format!("/api/v1/rooms/{room_id}/members"),
        Some(&by.token),
        Some(json!({"username": username})),
    )
    .await
}

async fn remove_member(node: &Node, by: &User, room_id: &str, user_id: &str) -> Answer {
    call(
        node,
        "DELETE",
        &format!("/api/v1/rooms/{room_id}/members/{user_id}"),
        Some(&by.token),
        None,
    )
    .await
}

async fn set_role(node: &Node, by: &User, room_id: &str, user_id: &str, role: &str) -> Answer {
    call(
        node,
        "PUT",
        &format!("/api/v1/rooms/{room_id}/members/{user_id}/role"),
        Some(&by.token),
        Some(json!({"role": role})),
    )
    .await
}

async fn rooms_of(node: &Node, user: &User) -> Vec<Value> {
    let r = call(node, "GET", "/api/v1/rooms", Some(&user.token), None).await;
    assert_eq!(r.status, 200, "GET /rooms: {}", r.body);
    r.body["rooms"].as_array().expect("rooms array").clone()
}

/// The role of `user_id` in a room JSON, if a member.
fn role_of(room: &Value, user_id: &str) -> Option<String> {
    room["members"]
        .as_array()
        .expect("members array")
        .iter()
        .find(|m| m["user_id"] == user_id)
        .map(|m| m["role"].as_str().expect("role").to_string())
}

/// Checks the contract's room shape.
#[track_caller]
fn assert_room_shape(room: &Value, kind: &str) {
    assert!(
        room["room_id"].as_str().is_some_and(|s| !s.is_empty()),
        "room_id: {room}"
    );
    assert_eq!(room["kind"], kind, "{room}");
    assert!(room["name"].is_string(), "name: {room}");
    assert!(
        room["created_at"].as_str().is_some_and(|s| s.contains('T')),
        "created_at RFC 3339: {room}"
    );
    assert!(room["last_seq"].is_u64(), "last_seq: {room}");
    for m in room["members"].as_array().expect("members") {
        assert!(m["user_id"].is_string(), "member user_id: {m}");
        assert!(m["username"].is_string(), "member username: {m}");
        assert!(
            ["owner", "admin", "member"].contains(&m["role"].as_str().unwrap_or("")),
            "member role: {m}"
        );
    }
}

/// Checks the contract's message shape.
#[track_caller]
fn assert_message_shape(m: &Value) {
    for k in [
        "room_id",
        "message_id",
        "sender_id",
        "sender_name",
        "body",
        "sent_at",
        "client_msg_id",
    ] {
        assert!(m[k].is_string(), "message.{k}: {m}");
    }
    assert!(m["seq"].is_u64(), "message.seq: {m}");
}

/// Polls until `f` holds or 5 s pass.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- auth

#[tokio::test]
async fn register_creates_users_and_refuses_taken_or_invalid_names() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;

    let name = unique("alice");
    let r = register(&node, &name, "password123").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body["user_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(r.body["username"], name.as_str());

    // Taken, also in another case.
    assert_error(
        &register(&node, &name, "password456").await,
        409,
        "conflict",
    );
    let upper = name.to_ascii_uppercase();
    assert_error(
        &register(&node, &upper, "password456").await,
        409,
        "conflict",
    );

    // Names are stored lowercase, logins are case-insensitive.
    let mixed = unique("MiXed");
    let r = register(&node, &mixed, "password123").await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["username"], mixed.to_ascii_lowercase().as_str());
    let id = r.body["user_id"].clone();
    let l = login_answer(&node, &mixed.to_ascii_lowercase(), "password123").await;
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.body["user"]["user_id"], id);
    assert_error(
        &register(&node, &mixed.to_ascii_lowercase(), "password123").await,
        409,
        "conflict",
    );

    // Boundaries that are fine.
    for ok in ["abc", &"z".repeat(32), "a.b-c_9"] {
        let r = register(&node, ok, "12345678").await;
        assert_eq!(r.status, 201, "{ok}: {}", r.body);
    }
    let r = register(&node, "longpass", &"é".repeat(128)).await;
    assert_eq!(r.status, 201, "128-char password: {}", r.body);

    // Invalid usernames.
    let too_long = "a".repeat(33);
    for bad in [
        "",
        "ab",
        too_long.as_str(),
        "al ice",
        "al'ice",
        "ålice",
        "bob;drop",
        "<script>",
        "new\nline",
    ] {
        let r = register(&node, bad, "password123").await;
        assert_error(&r, 400, "invalid_request");
    }
    // Invalid passwords (characters, not bytes).
    let long_pw = "x".repeat(129);
    for bad in ["", "1234567", "ééééééé", long_pw.as_str()] {
        let r = register(&node, &unique("pw"), bad).await;
        assert_error(&r, 400, "invalid_request");
    }
    // Missing fields.
    let r = call(
        &node,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(json!({"username": unique("nopw")})),
    )
    .await;
    assert_error(&r, 400, "invalid_request");
}

#[tokio::test]
async fn login_answers_tokens_and_one_message_for_every_failure() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let name = unique("alice");
    let reg = register(&node, &name, "password123").await;
    assert_eq!(reg.status, 201);

    let l = login_answer(&node, &name, "password123").await;
    assert_eq!(l.status, 200, "{}", l.body);
    let access = l.body["access_token"].as_str().expect("access_token");
    assert!(!access.is_empty());
    assert!(l.body["refresh_token"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(
        l.body["expires_in"].as_u64().is_some_and(|n| n > 0),
        "expires_in: {}",
        l.body
    );
    assert_eq!(l.body["user"]["user_id"], reg.body["user_id"]);
    assert_eq!(l.body["user"]["username"], name.as_str());
    // Token answers (every API answer) are never cached nor sniffed.
    for (h, want) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(
            l.headers.get(h).and_then(|v| v.to_str().ok()),
            Some(want),
            "{h}"
        );
    }
    let m = me(&node, access).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.body["user_id"], reg.body["user_id"]);

    // Case-insensitive.
    let l2 = login_answer(&node, &name.to_ascii_uppercase(), "password123").await;
    assert_eq!(l2.status, 200, "{}", l2.body);
    assert_eq!(l2.body["user"]["user_id"], reg.body["user_id"]);
    assert_eq!(l2.body["user"]["username"], name.as_str());

    // Same answer whatever is wrong.
    let wrong_pw = assert_error(
        &login_answer(&node, &name, "password124").await,
        401,
        "unauthorized",
    );
    let unknown = assert_error(
        &login_answer(&node, &unique("nobody"), "password123").await,
        401,
        "unauthorized",
    );
    let malformed = assert_error(
        &login_answer(&node, "x'; --", "password123").await,
        401,
        "unauthorized",
    );
    assert_eq!(
        wrong_pw, unknown,
        "unknown user and wrong password must answer the same message"
    );
    assert_eq!(unknown, malformed);
}

#[tokio::test]
async fn refresh_rotates_and_old_tokens_stop_working() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;

    let r = refresh(&node, &alice.refresh).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let access2 = r.body["access_token"].as_str().expect("access").to_string();
    let refresh2 = r.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert!(r.body["expires_in"].as_u64().is_some_and(|n| n > 0));
    assert_eq!(r.body["user"]["user_id"], alice.user_id.as_str());
    assert_eq!(r.body["user"]["username"], alice.username.as_str());
    assert_ne!(refresh2, alice.refresh, "refresh token must rotate");
    let m = me(&node, &access2).await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert_eq!(m.body["user_id"], alice.user_id.as_str());

    // The old one is spent.
    assert_error(&refresh(&node, &alice.refresh).await, 401, "unauthorized");
    // The new one works once, then it is spent as well.
    let r3 = refresh(&node, &refresh2).await;
    assert_eq!(r3.status, 200, "{}", r3.body);
    assert_error(&refresh(&node, &refresh2).await, 401, "unauthorized");
    let refresh3 = r3.body["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&node, refresh3).await.status, 200);

    // Garbage.
    for bad in ["garbage", "", &"A".repeat(43), &alice.token] {
        assert_error(&refresh(&node, bad).await, 401, "unauthorized");
    }
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;

    let r = call(
        &node,
        "POST",
        "/api/v1/auth/logout",
        Some(&alice.token),
        Some(json!({"refresh_token": alice.refresh})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.body, Value::Null, "204 has no body");
    assert_error(&refresh(&node, &alice.refresh).await, 401, "unauthorized");

    // Without a body (and with an empty object): still 204.
    let again = login(&node, &alice.username, &alice.password).await;
    let r = call(
        &node,
        "POST",
        "/api/v1/auth/logout",
        Some(&again.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(
        &node,
        "POST",
        "/api/v1/auth/logout",
        Some(&again.token),
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // That session's refresh token was not named, so it still works.
    assert_eq!(refresh(&node, &again.refresh).await.status, 200);

    // Logout needs a bearer token.
    let r = call(
        &node,
        "POST",
        "/api/v1/auth/logout",
        None,
        Some(json!({"refresh_token": "x"})),
    )
    .await;
    assert_error(&r, 401, "unauthorized");
}

// ---------------------------------------------------------------- users

#[tokio::test]
async fn users_me_and_profiles_with_presence() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;

    let m = me(&node, &alice.token).await;
    assert_eq!(m.status, 200);
    assert_eq!(m.body["user_id"], alice.user_id.as_str());
    assert_eq!(m.body["username"], alice.username.as_str());
    assert_error(
        &call(&node, "GET", "/api/v1/users/me", None, None).await,
        401,
        "unauthorized",
    );

    let profile = |id: String| {
        let node = &node;
        let token = alice.token.clone();
        async move {
            call(
                node,
                "GET",
                &format!("/api/v1/users/{id}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    let p = profile(bob.user_id.clone()).await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.body["user_id"], bob.user_id.as_str());
    assert_eq!(p.body["username"], bob.username.as_str());
    assert_eq!(p.body["online"], false, "{}", p.body);
    assert!(
        p.body
            .get("last_seen")
            .is_some_and(|v| v.is_null() || v.is_string()),
        "last_seen present (null or time): {}",
        p.body
    );
    assert!(p.body.get("password_hash").is_none() && p.body.get("password").is_none());

    let ws = Client::connect(&node, &bob.token).await;
    eventually("bob online", || async {
        let p = profile(bob.user_id.clone()).await;
        p.body["online"] == true && p.body["last_seen"].is_string()
    })
    .await;
    ws.close().await;
    eventually("bob offline with last_seen", || async {
        let p = profile(bob.user_id.clone()).await;
        p.body["online"] == false && p.body["last_seen"].is_string()
    })
    .await;

    assert_error(&profile(NO_SUCH_ID.into()).await, 404, "not_found");
    assert_error(&profile("nope".into()).await, 404, "not_found");
    assert_error(
        &call(
            &node,
            "GET",
            &format!("/api/v1/users/{}", bob.user_id),
            None,
            None,
        )
        .await,
        401,
        "unauthorized",
    );
}

// ---------------------------------------------------------------- rooms

#[tokio::test]
async fn creating_a_group_room_makes_the_caller_owner_and_tells_members() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let dave = user(&node, "dave").await;
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let mut d = Client::connect(&node, &dave.token).await;

    let r = call(
        &node,
        "POST",
        "/api/v1/rooms",
        Some(&alice.token),
        Some(
            json!({"name": "team", "members": [bob.username, carol.username.to_ascii_uppercase()]}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let room = r.body;
    assert_room_shape(&room, "group");
    assert_eq!(room["name"], "team");
    assert_eq!(room["last_seq"], 0);
    assert_eq!(room["members"].as_array().unwrap().len(), 3, "{room}");
    assert_eq!(role_of(&room, &alice.user_id).as_deref(), Some("owner"));
    assert_eq!(role_of(&room, &bob.user_id).as_deref(), Some("member"));
    assert_eq!(role_of(&room, &carol.user_id).as_deref(), Some("member"));
    let carol_entry = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == carol.user_id.as_str())
        .unwrap();
    assert_eq!(carol_entry["username"], carol.username.as_str());
    let rid = room_id(&room);

    // `room` created reaches the members' sessions, not others.
    for ws in [&mut a, &mut b] {
        let ev = ws
            .expect(|f| f["type"] == "room" && f["room"]["room_id"] == rid.as_str())
            .await;
        assert_eq!(ev["event"], "created", "{ev}");
        assert_room_shape(&ev["room"], "group");
        assert_eq!(ev["room"]["members"].as_array().unwrap().len(), 3);
    }
    d.expect_none(Duration::from_millis(400), |f| f["type"] == "room")
        .await;

    // Naming the caller or someone twice does not duplicate members.
    let r = call(
        &node,
        "POST",
        "/api/v1/rooms",
        Some(&alice.token),
        Some(json!({"name": "dups", "members": [alice.username, bob.username, bob.username]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2, "{}", r.body);
    assert_eq!(role_of(&r.body, &alice.user_id).as_deref(), Some("owner"));

    // An unknown member refuses the whole request and creates nothing.
    let before = rooms_of(&node, &alice).await.len();
    let r = call(
        &node,
        "POST",
        "/api/v1/rooms",
        Some(&alice.token),
        Some(json!({"name": "ghosts", "members": [bob.username, unique("ghost")]})),
    )
    .await;
    assert_error(&r, 400, "invalid_request");
    assert_eq!(rooms_of(&node, &alice).await.len(), before);
    assert!(
        rooms_of(&node, &bob)
            .await
            .iter()
            .all(|r| r["name"] != "ghosts"),
        "no room was created for bob"
    );

    // Names: 1-100 characters.
    for bad in ["", "   ", &"n".repeat(101)] {
        let r = call(
            &node,
            "POST",
            "/api/v1/rooms",
            Some(&alice.token),
            Some(json!({"name": bad, "members": []})),
        )
        .await;
        assert_error(&r, 400, "invalid_request");
    }
    let r = call(
        &node,
        "POST",
        "/api/v1/rooms",
        Some(&alice.token),
        Some(json!({"name": "n".repeat(100), "members": []})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // No members: left out, empty, or null alike.
    for members in [None, Some(json!([])), Some(Value::Null)] {
        let mut body = json!({"name": "alone"});
        if let Some(m) = members.clone() {
            body["members"] = m;
        }
        let r = call(
            &node,
            "POST",
            "/api/v1/rooms",
            Some(&alice.token),
            Some(body),
        )
        .await;
        assert_eq!(r.status, 201, "members {members:?}: {}", r.body);
        assert_eq!(r.body["members"].as_array().map(Vec::len), Some(1));
    }
    assert_error(
        &call(
            &node,
            "POST",
            "/api/v1/rooms",
            None,
            Some(json!({"name": "x", "members": []})),
        )
        .await,
        401,
        "unauthorized",
    );
}

#[tokio::test]
async fn direct_rooms_are_one_per_pair() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let mut b = Client::connect(&node, &bob.token).await;

    let direct = |by: &User, name: &str| {
        let node = &node;
        let token = by.token.clone();
        let body = json!({"username": name});
        async move {
            call(
                node,
                "POST",
                "/api/v1/rooms/direct",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    let first = direct(&alice, &bob.username).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_room_shape(&first.body, "direct");
    let rid = room_id(&first.body);
    let members = first.body["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert!(role_of(&first.body, &alice.user_id).is_some());
    assert!(role_of(&first.body, &bob.user_id).is_some());
    let ev = b
        .expect(|f| f["type"] == "room" && f["room"]["room_id"] == rid.as_str())
        .await;
    assert_eq!(ev["event"], "created");

    // The same room on repeat, from either side, in any case.
    for (by, name) in [
        (&alice, bob.username.clone()),
        (&bob, alice.username.clone()),
        (&alice, bob.username.to_ascii_uppercase()),
    ] {
        let again = direct(by, &name).await;
        assert_eq!(again.status, 200, "{}", again.body);
        assert_eq!(room_id(&again.body), rid);
        assert_eq!(again.body["kind"], "direct");
    }
    let directs: Vec<Value> = rooms_of(&node, &alice)
        .await
        .into_iter()
        .filter(|r| r["kind"] == "direct")
        .collect();
    assert_eq!(directs.len(), 1, "{directs:?}");
    // Only one `created` event.
    b.expect_none(Duration::from_millis(300), |f| {
        f["type"] == "room" && f["event"] == "created"
    })
    .await;

    for me in [alice.username.clone(), alice.username.to_ascii_uppercase()] {
        assert_error(&direct(&alice, &me).await, 400, "invalid_request");
    }
    assert_error(&direct(&alice, &unique("ghost")).await, 404, "not_found");
}

#[tokio::test]
async fn room_list_carries_read_state_and_unread_counts() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let rid = room_id(&group(&node, &alice, "counts", &[&bob]).await);
    let other = room_id(&group(&node, &bob, "bob-only", &[]).await);

    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=3 {
        let ack = a.send_message(&rid, &format!("u{i}"), "hi").await;
        assert_eq!(ack["type"], "sent", "{ack}");
    }
    let list = rooms_of(&node, &bob).await;
    assert_eq!(list.len(), 2, "{list:?}");
    let entry = list.iter().find(|r| r["room_id"] == rid.as_str()).unwrap();
    assert_room_shape(entry, "group");
    assert_eq!(entry["name"], "counts");
    assert_eq!(entry["last_seq"], 3, "{entry}");
    assert_eq!(entry["read_seq"], 0, "{entry}");
    assert_eq!(entry["unread"], 3, "{entry}");
    let empty = list
        .iter()
        .find(|r| r["room_id"] == other.as_str())
        .unwrap();
    assert_eq!(
        (&empty["last_seq"], &empty["read_seq"], &empty["unread"]),
        (&json!(0), &json!(0), &json!(0))
    );

    let mut b = Client::connect(&node, &bob.token).await;
    b.send(json!({"type": "read", "room_id": rid, "seq": 2}))
        .await;
    eventually("bob's read_seq 2 in GET /rooms", || async {
        let list = rooms_of(&node, &bob).await;
        let e = list.iter().find(|r| r["room_id"] == rid.as_str()).unwrap();
        e["read_seq"] == 2 && e["unread"] == 1 && e["last_seq"] == 3
    })
    .await;

    // Others' rooms are not listed.
    let carols = rooms_of(&node, &carol).await;
    assert!(carols.is_empty(), "{carols:?}");
}

#[tokio::test]
async fn a_member_added_later_finds_earlier_messages_in_history_not_unread() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let rid = room_id(&group(&node, &alice, "late", &[&bob]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    for id in ["early1", "early2", "early3"] {
        let ack = a.send_message(&rid, id, "before carol").await;
        assert_eq!(ack["type"], "sent", "{ack}");
    }
    assert_eq!(marks_in(&node, &bob, &rid).await, (3, 0, 3));

    assert_eq!(
        add_member(&node, &alice, &rid, &carol.username)
            .await
            .status,
        200
    );
    assert_eq!(marks_in(&node, &carol, &rid).await, (3, 3, 0));
    let old = history(&node, &carol, &rid, "").await;
    assert_eq!(old.body["messages"].as_array().map(Vec::len), Some(3));
    // Nobody is told Carol read anything: she has not.
    b.expect_none(Duration::from_millis(400), |f| {
        f["type"] == "receipt" && f["user_id"] == carol.user_id.as_str()
    })
    .await;
    let ack = a.send_message(&rid, "after", "welcome carol").await;
    assert_eq!(ack["type"], "sent", "{ack}");
    assert_eq!(marks_in(&node, &carol, &rid).await, (4, 3, 1));

    // Removed and added again: what was said meanwhile is not unread either.
    let removed = remove_member(&node, &alice, &rid, &carol.user_id).await;
    assert_eq!(removed.status, 204);
    for id in ["away1", "away2"] {
        let ack = a.send_message(&rid, id, "without carol").await;
        assert_eq!(ack["type"], "sent", "{ack}");
    }
    assert_eq!(
        add_member(&node, &alice, &rid, &carol.username)
            .await
            .status,
        200
    );
    assert_eq!(marks_in(&node, &carol, &rid).await, (6, 6, 0));
}

/// `(last_seq, read_seq, unread)` of `room_id` in `user`'s `GET /rooms`.
async fn marks_in(node: &Node, user: &User, room_id: &str) -> (u64, u64, u64) {
    let list = rooms_of(node, user).await;
    let entry = list
        .iter()
        .find(|r| r["room_id"] == room_id)
        .unwrap_or_else(|| panic!("{room_id} not in {list:?}"));
    let n = |k: &str| {
        entry[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {entry}"))
    };
    (n("last_seq"), n("read_seq"), n("unread"))
}

#[tokio::test]
async fn room_list_holds_every_room_newest_first() {
    // More rooms than the node loads at once, each with its own count, so
    // a list that loses, repeats or mixes up rooms cannot pass.
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let mut created = Vec::new();
    for i in 0..40 {
        created.push(room_id(
            &group(&node, &alice, &format!("r{i}"), &[&bob]).await,
        ));
    }
    let mut a = Client::connect(&node, &alice.token).await;
    for (i, rid) in created.iter().enumerate() {
        for n in 0..i % 4 {
            let ack = a.send_message(rid, &format!("m{i}-{n}"), "hi").await;
            assert_eq!(ack["type"], "sent", "{ack}");
        }
    }

    let list = rooms_of(&node, &bob).await;
    let listed: Vec<&str> = list.iter().filter_map(|r| r["room_id"].as_str()).collect();
    let newest_first: Vec<&str> = created.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    for (i, rid) in created.iter().enumerate() {
        let entry = list.iter().find(|r| r["room_id"] == rid.as_str()).unwrap();
        assert_eq!(entry["name"], format!("r{i}"), "{entry}");
        assert_eq!(entry["unread"], i % 4, "{entry}");
        assert_eq!(
            entry["members"].as_array().map(Vec::len),
            Some(2),
            "{entry}"
        );
    }
}

#[tokio::test]
async fn rooms_of_others_are_indistinguishable_from_missing_ones() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let mallory = user(&node, "mallory").await;
    let room = group(&node, &alice, "private", &[&bob]).await;
    let rid = room_id(&room);

    let g = get_room(&node, &bob, &rid).await;
    assert_eq!(g.status, 200, "{}", g.body);
    assert_room_shape(&g.body, "group");
    assert_eq!(g.body["room_id"], rid.as_str());
    assert_eq!(g.body["members"], room["members"]);

    let theirs = get_room(&node, &mallory, &rid).await;
    let missing = get_room(&node, &mallory, NO_SUCH_ID).await;
    assert_error(&theirs, 404, "not_found");
    assert_error(&missing, 404, "not_found");
    assert_eq!(theirs.body, missing.body, "no existence leak");
    assert_error(&get_room(&node, &mallory, "nope").await, 404, "not_found");

    // Every room endpoint answers the same for a stranger.
    for id in [rid.as_str(), NO_SUCH_ID] {
        assert_error(&history(&node, &mallory, id, "").await, 404, "not_found");
        let r = call(
            &node,
            "PATCH",
            &format!("/api/v1/rooms/{id}"),
            Some(&mallory.token),
            Some(json!({"name": "mine now"})),
        )
        .await;
        assert_error(&r, 404, "not_found");
        assert_error(
            &add_member(&node, &mallory, id, &mallory.username).await,
            404,
            "not_found",
        );
        assert_error(
            &remove_member(&node, &mallory, id, &bob.user_id).await,
            404,
            "not_found",
        );
        assert_error(
            &set_role(&node, &mallory, id, &mallory.user_id, "admin").await,
            404,
            "not_found",
        );
    }
    // Nothing changed.
    let g = get_room(&node, &alice, &rid).await;
    assert_eq!(g.body["name"], "private");
    assert_eq!(g.body["members"], room["members"]);
    assert_eq!(role_of(&g.body, &mallory.user_id), None);
    assert_eq!(history(&node, &bob, &rid, "").await.status, 200);
}

#[tokio::test]
async fn only_owners_and_admins_rename() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let rid = room_id(&group(&node, &alice, "old name", &[&bob]).await);
    let mut b = Client::connect(&node, &bob.token).await;
    let rename = |by: &User, name: &str| {
        let node = &node;
        let token = by.token.clone();
        let path = format!("/api/v1/rooms/{rid}");
        let body = json!({"name": name});
        async move { call(node, "PATCH", &path, Some(&token), Some(body)).await }
    };

    let r = rename(&alice, "new name").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_room_shape(&r.body, "group");
    assert_eq!(r.body["name"], "new name");
    assert_eq!(get_room(&node, &bob, &rid).await.body["name"], "new name");
    let ev = b
        .expect(|f| f["type"] == "room" && f["event"] == "updated")
        .await;
    assert_eq!(ev["room"]["name"], "new name");

    assert_error(&rename(&bob, "bob's room").await, 403, "forbidden");
    assert_eq!(get_room(&node, &bob, &rid).await.body["name"], "new name");
    assert_error(&rename(&alice, "").await, 400, "invalid_request");
}

#[tokio::test]
async fn owners_and_admins_add_members_who_then_see_the_room() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let dave = user(&node, "dave").await;
    let rid = room_id(&group(&node, &alice, "club", &[&bob]).await);
    let mut b = Client::connect(&node, &bob.token).await;
    let mut c = Client::connect(&node, &carol.token).await;

    // A plain member may not add.
    assert_error(
        &add_member(&node, &bob, &rid, &carol.username).await,
        403,
        "forbidden",
    );
    assert_error(&get_room(&node, &carol, &rid).await, 404, "not_found");
    assert!(rooms_of(&node, &carol).await.is_empty());

    // The owner may.
    let r = add_member(&node, &alice, &rid, &carol.username).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_room_shape(&r.body, "group");
    assert_eq!(role_of(&r.body, &carol.user_id).as_deref(), Some("member"));
    assert_eq!(r.body["members"].as_array().unwrap().len(), 3);

    let g = get_room(&node, &carol, &rid).await;
    assert_eq!(g.status, 200, "{}", g.body);
    let carols = rooms_of(&node, &carol).await;
    assert!(
        carols.iter().any(|r| r["room_id"] == rid.as_str()),
        "{carols:?}"
    );
    for ws in [&mut c, &mut b] {
        let ev = ws
            .expect(|f| f["type"] == "room" && f["room"]["room_id"] == rid.as_str())
            .await;
        assert_eq!(ev["event"], "member_added", "{ev}");
        assert_eq!(
            role_of(&ev["room"], &carol.user_id).as_deref(),
            Some("member")
        );
    }
    // The new member takes part right away.
    let ack = c.send_message(&rid, "hello-1", "hi all").await;
    assert_eq!(ack["type"], "sent", "{ack}");
    let m = b
        .expect(|f| f["type"] == "message" && f["room_id"] == rid.as_str())
        .await;
    assert_eq!(m["sender_id"], carol.user_id.as_str());

    // Adding a member twice changes nothing.
    let r = add_member(&node, &alice, &rid, &carol.username).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["members"].as_array().unwrap().len(), 3);
    // A user that does not exist is not added.
    let r = add_member(&node, &alice, &rid, &unique("ghost")).await;
    assert!(
        r.status == 404 || r.status == 400,
        "unknown user: {} {}",
        r.status,
        r.body
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
    // Nor does someone get in by asking a member who cannot add.
    assert_error(
        &add_member(&node, &carol, &rid, &dave.username).await,
        403,
        "forbidden",
    );
    assert_error(&get_room(&node, &dave, &rid).await, 404, "not_found");
}

#[tokio::test]
async fn members_are_removed_by_owners_or_leave_themselves() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let dave = user(&node, "dave").await;
    let rid = room_id(&group(&node, &alice, "club", &[&bob, &carol, &dave]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let mut c = Client::connect(&node, &carol.token).await;

    // A member may not remove another member (nor the owner).
    assert_error(
        &remove_member(&node, &bob, &rid, &carol.user_id).await,
        403,
        "forbidden",
    );
    assert_error(
        &remove_member(&node, &bob, &rid, &alice.user_id).await,
        403,
        "forbidden",
    );
    assert_eq!(get_room(&node, &carol, &rid).await.status, 200);

    // The owner may.
    let r = remove_member(&node, &alice, &rid, &carol.user_id).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.body, Value::Null);
    assert_error(&get_room(&node, &carol, &rid).await, 404, "not_found");
    assert_error(&history(&node, &carol, &rid, "").await, 404, "not_found");
    assert!(rooms_of(&node, &carol)
        .await
        .iter()
        .all(|r| r["room_id"] != rid.as_str()));
    let room = get_room(&node, &alice, &rid).await.body;
    assert_eq!(role_of(&room, &carol.user_id), None, "{room}");
    assert_eq!(room["members"].as_array().unwrap().len(), 3);
    let ev = b
        .expect(|f| f["type"] == "room" && f["event"] == "member_removed")
        .await;
    assert_eq!(role_of(&ev["room"], &carol.user_id), None);

    // The removed member can no longer write or read along.
    let err = c.send_message(&rid, "after-removal", "let me in").await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["code"], "not_found");
    let ack = a.send_message(&rid, "secret-1", "carol is gone").await;
    assert_eq!(ack["type"], "sent", "{ack}");
    assert_eq!(ack["seq"], 1, "the refused send created nothing");
    b.expect(|f| f["type"] == "message" && f["seq"] == 1).await;
    c.expect_none(Duration::from_millis(400), |f| f["type"] == "message")
        .await;

    // A member leaves by itself.
    let r = remove_member(&node, &dave, &rid, &dave.user_id).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_error(&get_room(&node, &dave, &rid).await, 404, "not_found");
    let room = get_room(&node, &alice, &rid).await.body;
    assert_eq!(room["members"].as_array().unwrap().len(), 2, "{room}");
    // Leaving twice: no longer a member.
    assert_error(
        &remove_member(&node, &dave, &rid, &dave.user_id).await,
        404,
        "not_found",
    );
    // Naming someone who is not a member: the room is there, the member is not.
    let message = assert_error(
        &remove_member(&node, &alice, &rid, &carol.user_id).await,
        404,
        "not_found",
    );
    assert_eq!(message, "member not found");
    let message = assert_error(
        &set_role(&node, &alice, &rid, &dave.user_id, "admin").await,
        404,
        "not_found",
    );
    assert_eq!(message, "member not found");
}

#[tokio::test]
async fn the_owner_makes_admins_who_can_then_manage_members() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let dave = user(&node, "dave").await;
    let rid = room_id(&group(&node, &alice, "club", &[&bob, &carol]).await);

    // Members may not hand out roles.
    assert_error(
        &set_role(&node, &bob, &rid, &bob.user_id, "admin").await,
        403,
        "forbidden",
    );
    assert_error(
        &set_role(&node, &bob, &rid, &carol.user_id, "admin").await,
        403,
        "forbidden",
    );
    assert_error(
        &add_member(&node, &bob, &rid, &dave.username).await,
        403,
        "forbidden",
    );

    let r = set_role(&node, &alice, &rid, &bob.user_id, "admin").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_room_shape(&r.body, "group");
    assert_eq!(role_of(&r.body, &bob.user_id).as_deref(), Some("admin"));
    let g = get_room(&node, &carol, &rid).await.body;
    assert_eq!(role_of(&g, &bob.user_id).as_deref(), Some("admin"));
    assert_eq!(role_of(&g, &alice.user_id).as_deref(), Some("owner"));

    // The admin adds (and may remove plain members).
    let r = add_member(&node, &bob, &rid, &dave.username).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(role_of(&r.body, &dave.user_id).as_deref(), Some("member"));
    let r = remove_member(&node, &bob, &rid, &dave.user_id).await;
    assert_eq!(r.status, 204, "{}", r.body);

    // Back to member: the power is gone.
    let r = set_role(&node, &alice, &rid, &bob.user_id, "member").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(role_of(&r.body, &bob.user_id).as_deref(), Some("member"));
    assert_error(
        &add_member(&node, &bob, &rid, &dave.username).await,
        403,
        "forbidden",
    );

    // Not a role, or one that is never given: the rule, not serde's list
    // of every variant (which named `owner`).
    for role in ["superuser", "owner"] {
        let message = assert_error(
            &set_role(&node, &alice, &rid, &bob.user_id, role).await,
            400,
            "invalid_request",
        );
        assert!(
            message.contains("role must be admin or member"),
            "{message}"
        );
        assert!(!message.contains("owner"), "{message}");
    }
}

// ---------------------------------------------------------------- history

#[tokio::test]
async fn history_pages_back_and_forth_without_gaps_or_duplicates() {
    const N: u64 = 250;
    let dir = data_dir();
    let node = Node::start_with(dir.path(), &["--ws-rate", "0"]).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let rid = room_id(&group(&node, &alice, "long", &[&bob]).await);
    let mut a = Client::connect(&node, &alice.token).await;
    for i in 1..=N {
        a.send(
            json!({"type": "send", "ref": format!("r{i}"), "room_id": rid,
            "client_msg_id": format!("c{i}"), "body": format!("m{i}")}),
        )
        .await;
    }
    a.messages_until(&rid, N).await;

    let page = |q: String| {
        let node = &node;
        let bob = bob.clone();
        let rid = rid.clone();
        async move {
            let r = history(node, &bob, &rid, &q).await;
            assert_eq!(r.status, 200, "{q}: {}", r.body);
            let seqs: Vec<u64> = r.body["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq"))
                .collect();
            let has_more = r.body["has_more"].as_bool().expect("has_more");
            (seqs, has_more, r.body)
        }
    };

    // Default: the newest 50, ascending, more before them.
    let (seqs, more, body) = page(String::new()).await;
    assert_eq!(seqs, (N - 49..=N).collect::<Vec<_>>());
    assert!(more);
    for m in body["messages"].as_array().unwrap() {
        assert_message_shape(m);
        let seq = m["seq"].as_u64().unwrap();
        assert_eq!(m["room_id"], rid.as_str());
        assert_eq!(m["body"], format!("m{seq}"));
        assert_eq!(m["client_msg_id"], format!("c{seq}"));
        assert_eq!(m["sender_id"], alice.user_id.as_str());
        assert_eq!(m["sender_name"], alice.username.as_str());
    }

    // Backwards to the first message.
    let mut all = seqs.clone();
    let mut before = seqs[0];
    let mut pages = 1;
    loop {
        let (seqs, more, _) = page(format!("?before_seq={before}")).await;
        assert!(!seqs.is_empty(), "empty page before {before}");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(*seqs.last().unwrap(), before - 1, "no gap at {before}");
        assert!(seqs.len() <= 50);
        pages += 1;
        all.splice(0..0, seqs.iter().copied());
        before = seqs[0];
        if !more {
            break;
        }
        assert!(pages < 20, "paging does not end");
    }
    assert_eq!(before, 1, "the last backwards page ends at seq 1");
    assert_eq!(all, (1..=N).collect::<Vec<_>>(), "no gaps, no duplicates");
    let (seqs, more, _) = page("?before_seq=1".into()).await;
    assert!(seqs.is_empty() && !more);

    // Forwards from the start.
    let mut fwd: Vec<u64> = Vec::new();
    let mut after = 0;
    loop {
        let (seqs, more, _) = page(format!("?after_seq={after}&limit=60")).await;
        assert!(seqs.len() <= 60);
        if let Some(first) = seqs.first() {
            assert_eq!(*first, after + 1, "no gap after {after}");
        }
        fwd.extend(&seqs);
        if !more {
            break;
        }
        after = *seqs.last().unwrap();
        assert!(fwd.len() < 1000, "paging does not end");
    }
    assert_eq!(fwd, (1..=N).collect::<Vec<_>>());
    let (seqs, more, _) = page(format!("?after_seq={N}")).await;
    assert!(seqs.is_empty() && !more);
    // The ends of the u64 range.
    let (seqs, more, _) = page(format!("?after_seq={}", u64::MAX)).await;
    assert!(seqs.is_empty() && !more, "after u64::MAX: {seqs:?}");
    let (seqs, more, _) = page(format!("?before_seq={}", u64::MAX)).await;
    assert_eq!(seqs, (N - 49..=N).collect::<Vec<_>>());
    assert!(more);

    // Limits: a small page, and anything above 200 clamps to 200.
    let (seqs, more, _) = page("?limit=7".into()).await;
    assert_eq!(seqs, (N - 6..=N).collect::<Vec<_>>());
    assert!(more);
    for l in [200, 201, 500, 100_000] {
        let (seqs, more, _) = page(format!("?limit={l}")).await;
        assert_eq!(seqs, (N - 199..=N).collect::<Vec<_>>(), "limit={l}");
        assert!(more);
    }
    let (seqs, more, _) = page("?after_seq=0&limit=1000".into()).await;
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    assert!(more);

    // Bad parameters.
    for q in [
        "?limit=0",
        "?limit=abc",
        "?limit=-1",
        "?limit=1.5",
        "?before_seq=abc",
        "?after_seq=-5",
        "?after_seq=1e3",
        "?after_seq=18446744073709551616",
        "?limit=4294967296",
    ] {
        let r = history(&node, &bob, &rid, q).await;
        assert_error(&r, 400, "invalid_request");
    }
}

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn health_ready_and_metrics() {
    let dir = data_dir();
    let node = Node::start(dir.path()).await;
    let alice = user(&node, "alice").await;

    let h = call(&node, "GET", "/health", None, None).await;
    assert_eq!(h.status, 200, "{}", h.body);
    let r = call(&node, "GET", "/ready", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    let sessions = || async {
        let resp = reqwest::get(node.url("/metrics")).await.expect("metrics");
        assert_eq!(resp.status().as_u16(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "content-type {ct}");
        let text = resp.text().await.unwrap();
        let line = text
            .lines()
            .find(|l| !l.starts_with('#') && l.starts_with("parley_sessions"))
            .unwrap_or_else(|| panic!("no parley_sessions sample in:\n{text}"));
        line.split_whitespace()
            .last()
            .unwrap()
            .parse::<f64>()
            .expect("numeric sample")
    };
    assert_eq!(sessions().await, 0.0);
    let ws = Client::connect(&node, &alice.token).await;
    assert_eq!(sessions().await, 1.0);
    ws.close().await;
    eventually("parley_sessions back to 0", || async {
        sessions().await == 0.0
    })
    .await;
}
