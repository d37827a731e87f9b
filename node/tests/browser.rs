//! The web client in real headless Chromium, driven over WebDriver.
//!
//! Each test starts a real node and its own `chromedriver` on free loopback
//! ports, and opens one Chromium session (its own profile) per user. Every
//! check waits for a condition with a deadline; nothing relies on a fixed
//! sleep. The tests fail, not skip, when Chromium or chromedriver is missing
//! (Debian: `apt-get install chromium chromium-driver`); `PARLEY_CHROMIUM` and
//! `PARLEY_CHROMEDRIVER` point elsewhere.
//!
//! `screenshots` (ignored by default) writes the README's pictures:
//! `PARLEY_SCREENSHOTS_DIR=docs/images cargo test -p parley-node --test browser screenshots`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const PASSWORD: &str = "correct horse battery";
const XSS: &str = "<img src=x onerror=alert(1)>";

/// Cheap hashing and no rate limits: the browsers log in several times.
const NODE_FLAGS: &[&str] = &[
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
    "--login-rate-per-ip",
    "0",
    "--login-rate-per-user",
    "0",
    "--register-rate-per-ip",
    "0",
];

fn program(var: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found: the browser tests need Chromium and its WebDriver \
         (Debian: apt-get install chromium chromium-driver), or {var} set",
        path.display()
    );
    path
}

// ---------------------------------------------------------------- chromedriver

/// A `chromedriver` process on a free loopback port. Dropping it ends every
/// browser session it still has (also when a test panics), then kills it.
struct Driver {
    child: Child,
    port: u16,
    chromium: PathBuf,
    /// Sessions not closed yet.
    sessions: Arc<Mutex<Vec<String>>>,
}

impl Driver {
    async fn start() -> Driver {
        let chromium = program("PARLEY_CHROMIUM", "/usr/bin/chromium");
        let exe = program("PARLEY_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let child = Command::new(exe)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        let mut driver = Driver {
            child,
            port,
            chromium,
            sessions: Arc::default(),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let status = http
                .get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .await;
            if let Ok(r) = status {
                let body: Value = r.json().await.unwrap_or_default();
                if body["value"]["ready"] == true {
                    return driver;
                }
            }
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited early: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new Chromium window with a fresh profile, `width` x `height` pixels.
    async fn open(&self, who: &str, width: u32, height: u32) -> Browser {
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--no-first-run".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        let caps = json!({
            "browserName": "chrome",
            // Leave a dialog open so that `assert_no_alert` can see it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {"binary": self.chromium, "args": args},
        });
        let caps = match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        let wd = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("{who}: cannot start Chromium: {e}"));
        let id = wd.session_id().await.ok().flatten().unwrap_or_default();
        self.sessions.lock().unwrap().push(id.clone());
        Browser {
            wd,
            who: who.to_string(),
            id,
            open: self.sessions.clone(),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        // Plain blocking HTTP: this also runs while a panicking test unwinds.
        let mut open = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for id in open.drain(..) {
            let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
                 Content-Length: 0\r\nConnection: close\r\n\r\n",
                self.port
            );
            let _ = s.read(&mut [0; 256]); // the answer comes once Chromium has quit
        }
        let _ = self.child.start_kill();
    }
}

// ---------------------------------------------------------------- one browser

/// One user's browser.
struct Browser {
    wd: WebDriver,
    who: String,
    /// WebDriver session id, and the driver's list of open sessions.
    id: String,
    open: Arc<Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        _ => true,
    }
}

impl Browser {
    /// Runs a script (a function body; `arguments[i]` are `args`) and returns its result.
    async fn js(&self, script: &str, args: &[Value]) -> Value {
        self.wd
            .execute(script, args.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{}: script failed: {e}\n{script}", self.who))
    }

    /// Polls `script` until its result satisfies `ok`; panics after 10 s.
    async fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: &[Value],
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script, args).await;
            if ok(&v) {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .js("return document.body.innerText.slice(0, 3000)", &[])
                    .await;
                panic!(
                    "{}: waited {WAIT:?} for {what}; last value: {v}\npage text:\n{}",
                    self.who,
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `script` until it returns something truthy, and returns that.
    async fn wait_js(&self, what: &str, script: &str, args: &[Value]) -> Value {
        self.wait_for(what, script, args, truthy).await
    }

    /// Waits until the script's result equals `want`.
    async fn wait_eq(&self, what: &str, script: &str, args: &[Value], want: Value) {
        self.wait_for(what, script, args, |v| *v == want).await;
    }

    /// Waits until `sel` is displayed.
    async fn wait_visible(&self, sel: &str) {
        self.wait_js(
            &format!("{sel} to be visible"),
            "const e = document.querySelector(arguments[0]); \
             return !!e && e.getClientRects().length > 0",
            &[json!(sel)],
        )
        .await;
    }

    async fn wait_text(&self, sel: &str, want: &str) {
        self.wait_eq(
            &format!("{sel} to read {want:?}"),
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : null",
            &[json!(sel)],
            json!(want),
        )
        .await;
    }

    /// Clicks `sel` once it is visible and enabled, as a user would.
    ///
    /// Lists (rooms, members) are redrawn whenever something changes, so an
    /// element found a moment ago may be replaced before the click lands;
    /// then the click is tried again on the new element.
    async fn click(&self, sel: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.wait_js(
                &format!("{sel} to be clickable"),
                "const e = document.querySelector(arguments[0]); \
                 return !!e && e.getClientRects().length > 0 && !e.disabled",
                &[json!(sel)],
            )
            .await;
            let clicked = match self.wd.find(Locator::Css(sel)).await {
                Ok(e) => e.click().await,
                Err(e) => Err(e),
            };
            match clicked {
                Ok(()) => return,
                Err(CmdError::Standard(e))
                    if matches!(
                        e.error,
                        ErrorStatus::StaleElementReference | ErrorStatus::NoSuchElement
                    ) && Instant::now() < deadline => {}
                Err(e) => panic!("{}: click {sel}: {e}", self.who),
            }
        }
    }

    /// Types into `sel` (keys go through the real input pipeline).
    async fn type_into(&self, sel: &str, text: &str) {
        self.wait_visible(sel).await;
        let e = self
            .wd
            .find(Locator::Css(sel))
            .await
            .unwrap_or_else(|e| panic!("{}: find {sel}: {e}", self.who));
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: type into {sel}: {e}", self.who));
    }

    /// Clears `sel`, then types `text`.
    async fn fill(&self, sel: &str, text: &str) {
        self.wait_visible(sel).await;
        let e = self
            .wd
            .find(Locator::Css(sel))
            .await
            .unwrap_or_else(|e| panic!("{}: find {sel}: {e}", self.who));
        e.clear()
            .await
            .unwrap_or_else(|e| panic!("{}: clear {sel}: {e}", self.who));
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: type into {sel}: {e}", self.who));
    }

    async fn goto(&self, url: &str) {
        self.wd
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("{}: goto {url}: {e}", self.who));
    }

    /// Waits for the chat view of `username` with a live WebSocket.
    async fn wait_signed_in(&self, username: &str) {
        self.wait_visible("#app-view").await;
        self.wait_text("#me-name", username).await;
        self.wait_eq(
            "the WebSocket to connect",
            "return document.querySelector('#connection-status').dataset.state",
            &[],
            json!("online"),
        )
        .await;
    }

    /// Registers through the sign-in form (which then logs in).
    async fn register(&self, username: &str) {
        self.wait_visible("#auth-view").await;
        self.fill("#login-username", username).await;
        self.fill("#login-password", PASSWORD).await;
        self.click("#register-button").await;
        self.wait_signed_in(username).await;
    }

    /// Logs in through the sign-in form.
    async fn login(&self, username: &str, password: &str) {
        self.wait_visible("#auth-view").await;
        self.fill("#login-username", username).await;
        self.fill("#login-password", password).await;
        self.click("#login-button").await;
    }

    /// Sends a message from the composer with the Send button.
    async fn send(&self, body: &str) {
        self.fill("#composer", body).await;
        self.click("#send-button").await;
    }

    /// The bodies of the open room's messages, in display order.
    async fn wait_bodies(&self, want: &[&str]) {
        self.wait_eq(
            &format!("messages {want:?}"),
            "return [...document.querySelectorAll('#message-list li.message')]\
             .map((li) => li.querySelector('.body').textContent)",
            &[],
            json!(want),
        )
        .await;
    }

    /// Waits for message `seq` of the open room to show `status` (pending, sent, delivered, seen).
    async fn wait_status(&self, seq: u64, status: &str) {
        self.wait_eq(
            &format!("message {seq} to be {status}"),
            "const li = document.querySelector(\
             `#message-list li.message[data-seq=\"${arguments[0]}\"]`); \
             return li ? li.dataset.status ?? null : null",
            &[json!(seq)],
            json!(status),
        )
        .await;
    }

    /// Opens a room from the room list.
    async fn open_room(&self, room_id: &str) {
        self.click(&format!(
            "#room-list li.room-item[data-room-id=\"{room_id}\"] button"
        ))
        .await;
        self.wait_eq(
            "the room to open",
            "return document.querySelector('#message-list').dataset.roomId",
            &[],
            json!(room_id),
        )
        .await;
    }

    /// The id of the room whose list entry is named `name`.
    async fn wait_room_named(&self, name: &str) -> String {
        let v = self
            .wait_js(
                &format!("a room named {name:?} in the list"),
                "const li = [...document.querySelectorAll('#room-list li.room-item')]\
                 .find((li) => li.querySelector('.room-name').textContent === arguments[0]); \
                 return li ? li.dataset.roomId : null",
                &[json!(name)],
            )
            .await;
        v.as_str().expect("room id").to_string()
    }

    /// Fails if a JavaScript dialog (alert, confirm, prompt) is open.
    async fn assert_no_alert(&self) {
        match self.wd.get_alert_text().await {
            Err(CmdError::Standard(e)) if e.error == ErrorStatus::NoSuchAlert => {}
            Ok(text) => panic!("{}: a dialog opened: {text:?}", self.who),
            Err(e) => panic!("{}: cannot check for dialogs: {e}", self.who),
        }
    }

    /// Resizes the window so that the page itself gets `width` x `height` pixels.
    async fn set_viewport(&self, width: u32, height: u32) {
        let inner = "return [innerWidth, innerHeight]";
        let resize = |w: u32, h: u32| async move {
            self.wd
                .set_window_size(w, h)
                .await
                .unwrap_or_else(|e| panic!("{}: resize: {e}", self.who));
        };
        resize(width, height).await;
        let got = self.js(inner, &[]).await;
        let extra = |i: usize, want: u32| want.saturating_sub(got[i].as_u64().unwrap_or(0) as u32);
        resize(width + extra(0, width), height + extra(1, height)).await;
        self.wait_eq("the viewport size", inner, &[], json!([width, height]))
            .await;
    }

    async fn screenshot(&self, path: &Path) {
        let png = self
            .wd
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("{}: screenshot: {e}", self.who));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000,
            "{}: not a PNG",
            self.who
        );
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("wrote {}", path.display());
    }

    async fn close(self) {
        self.open.lock().unwrap().retain(|id| *id != self.id);
        self.wd
            .close()
            .await
            .unwrap_or_else(|e| panic!("{}: close: {e}", self.who));
    }
}

/// The state of a room list entry's presence dot: `online`, `offline` or null.
const DOT_STATE: &str = "const d = document.querySelector(\
     `#room-list li.room-item[data-room-id=\"${arguments[0]}\"] .presence-dot`); \
     return d ? (d.classList.contains('online') ? 'online' : 'offline') : null";

/// The open room's presence line and its state, e.g. `["online", "online"]`.
const ROOM_PRESENCE: &str = "const p = document.querySelector('#room-presence'); \
     return [p.textContent, p.dataset.state ?? '']";

// ---------------------------------------------------------------- the tests

/// Logs progress, so that a failure in CI shows how far the test got.
fn step(start: Instant, what: &str) {
    eprintln!("[browser {:6.2}s] {what}", start.elapsed().as_secs_f64());
}

/// Two users in two browsers: sign-up and login, a direct room, messages both
/// ways, typing, receipts up to seen, an XSS body shown as text, history after
/// a reload, a group with a member added from the members panel, and presence
/// going offline when one browser closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_in_real_browsers() {
    let start = Instant::now();
    let dir = data_dir();
    let node = Node::start_with(dir.path(), NODE_FLAGS).await;
    let driver = Driver::start().await;
    let (alice, bob) = tokio::join!(
        driver.open("alice", 1280, 900),
        driver.open("bob", 1280, 900)
    );
    tokio::join!(alice.goto(&node.base), bob.goto(&node.base));

    step(start, "sign-up and login");
    // Sign-up through the form; bob then logs out and back in, first with a wrong password.
    tokio::join!(alice.register("alice"), bob.register("bob"));
    bob.click("#logout-button").await;
    bob.login("bob", "wrong password!").await;
    bob.wait_js(
        "an error for a wrong password",
        "const e = document.querySelector('#auth-error'); return !e.hidden && e.textContent",
        &[],
    )
    .await;
    assert!(!truthy(
        &bob.js("return !document.querySelector('#app-view').hidden", &[])
            .await
    ));
    bob.login("bob", PASSWORD).await;
    bob.wait_signed_in("bob").await;

    step(start, "direct room");
    // Alice starts a direct chat with bob by username.
    alice.fill("#new-direct-username", "bob").await;
    alice.click("#new-direct-button").await;
    alice.wait_text("#room-title", "bob").await;
    let room = alice
        .wait_js(
            "the direct room to open",
            "return document.querySelector('#message-list').dataset.roomId",
            &[],
        )
        .await;
    let room = room.as_str().unwrap().to_string();
    assert_eq!(bob.wait_room_named("alice").await, room);

    // Both are online, and each sees it.
    alice
        .wait_eq(
            "bob online",
            ROOM_PRESENCE,
            &[],
            json!(["online", "online"]),
        )
        .await;
    alice
        .wait_eq("bob's dot", DOT_STATE, &[json!(room)], json!("online"))
        .await;
    bob.wait_eq("alice's dot", DOT_STATE, &[json!(room)], json!("online"))
        .await;

    step(start, "delivered and unread");
    // A message bob receives but has not opened: delivered, and unread for him.
    // His room list entry is updated in place, not replaced (a redraw between
    // press and release would swallow a click), so a mark on it survives.
    let entry = format!("#room-list li.room-item[data-room-id=\"{room}\"]");
    bob.js(
        "document.querySelector(arguments[0]).dataset.probe = 'kept'",
        &[json!(entry)],
    )
    .await;
    alice.send("Hi Bob!").await;
    alice.wait_bodies(&["Hi Bob!"]).await;
    alice.wait_status(1, "delivered").await;
    let badge = format!("#room-list li.room-item[data-room-id=\"{room}\"] .unread");
    bob.wait_js(
        "an unread badge of 1",
        "const b = document.querySelector(arguments[0]); return !b.hidden && b.textContent === '1'",
        &[json!(badge)],
    )
    .await;
    let probe = bob
        .js(
            "return document.querySelector(arguments[0]).dataset.probe ?? null",
            &[json!(entry)],
        )
        .await;
    assert_eq!(probe, json!("kept"), "bob's room list entry was replaced");

    step(start, "seen");
    // Bob opens the room: he sees it, it is read, and alice's tick turns to seen.
    bob.open_room(&room).await;
    bob.wait_text("#room-title", "alice").await;
    bob.wait_bodies(&["Hi Bob!"]).await;
    alice.wait_status(1, "seen").await;
    bob.wait_js(
        "the unread badge to go",
        "return document.querySelector(arguments[0]).hidden",
        &[json!(badge)],
    )
    .await;

    step(start, "typing");
    // Alice types: bob sees her typing. Enter sends, which ends it.
    alice
        .type_into("#composer", "Are you coming Saturday?")
        .await;
    bob.wait_text("#typing-indicator", "alice is typing…").await;
    alice.type_into("#composer", "\u{E007}").await; // Enter
    bob.wait_bodies(&["Hi Bob!", "Are you coming Saturday?"])
        .await;
    bob.wait_text("#typing-indicator", "").await;
    alice.wait_status(2, "seen").await;

    step(start, "reply");
    // Bob answers; both see the whole conversation.
    bob.send("Yes, see you there").await;
    let conversation = ["Hi Bob!", "Are you coming Saturday?", "Yes, see you there"];
    alice.wait_bodies(&conversation).await;
    bob.wait_bodies(&conversation).await;
    bob.wait_status(3, "seen").await;
    assert_eq!(
        alice
            .js(
                "return document.querySelector('#message-list li.message[data-seq=\"3\"] .sender').textContent",
                &[]
            )
            .await,
        json!("bob")
    );

    step(start, "markup as text");
    // Markup in a body is text: no element, no script, no dialog.
    bob.send(XSS).await;
    let conversation = [
        "Hi Bob!",
        "Are you coming Saturday?",
        "Yes, see you there",
        XSS,
    ];
    for b in [&alice, &bob] {
        b.wait_bodies(&conversation).await;
        let v = b
            .js(
                "const body = document.querySelector('#message-list li.message[data-seq=\"4\"] .body'); \
                 return [body.textContent, body.childElementCount, \
                 document.querySelectorAll('#message-list img').length]",
                &[],
            )
            .await;
        assert_eq!(v, json!([XSS, 0, 0]), "{}", b.who);
        b.assert_no_alert().await;
    }

    step(start, "reload");
    // History (and the receipts) are back after a reload, in the same room.
    alice.wd.refresh().await.expect("reload");
    alice.wait_signed_in("alice").await;
    alice.wait_text("#room-title", "bob").await;
    alice.wait_bodies(&conversation).await;
    alice.wait_status(1, "seen").await;
    alice.wait_status(2, "seen").await;
    alice.assert_no_alert().await;

    step(start, "group and members panel");
    // A group with bob, then carol added from the members panel.
    alice.fill("#new-group-name", "Weekend trip").await;
    alice.fill("#new-group-members", "bob").await;
    alice.click("#new-group-button").await;
    alice.wait_text("#room-title", "Weekend trip").await;
    alice.wait_text("#room-presence", "2 members").await;
    let group = bob.wait_room_named("Weekend trip").await;
    assert_eq!(alice.wait_room_named("Weekend trip").await, group);
    let carol = user(&node, "carol").await;
    alice.click("#details-button").await;
    alice.wait_visible("#members-panel").await;
    alice.wait_visible("#add-member-form").await;
    alice.fill("#add-member-username", &carol.username).await;
    alice.click("#add-member-button").await;
    let names = "return [...document.querySelectorAll('#member-list .member .member-name')]\
         .map((e) => e.textContent).sort()";
    alice
        .wait_eq(
            "three members",
            names,
            &[],
            json!(["alice (you)", "bob", carol.username]),
        )
        .await;
    alice.wait_text("#panel-kind", "Group · 3 members").await;
    alice.wait_text("#room-presence", "3 members").await;
    let carols = call(&node, "GET", "/api/v1/rooms", Some(&carol.token), None).await;
    assert!(
        carols.body["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["room_id"] == group.as_str()),
        "carol is not in the group: {:?}",
        carols.body
    );
    // Bob sees the new member and talks to the group.
    bob.open_room(&group).await;
    bob.wait_text("#room-presence", "3 members").await;
    bob.send("Carol is in too").await;
    alice.wait_bodies(&["Carol is in too"]).await;

    step(start, "rename and roles");
    // Alice (the owner) renames the group and makes bob an admin from the
    // panel: bob sees the new name, his role, and the admin's controls.
    alice.fill("#rename-input", "Weekend away").await;
    alice.click("#rename-button").await;
    alice.wait_text("#room-title", "Weekend away").await;
    assert_eq!(bob.wait_room_named("Weekend away").await, group);
    bob.wait_text("#room-title", "Weekend away").await;
    let bob_id = alice
        .wait_js(
            "bob in the member list",
            "const li = [...document.querySelectorAll('#member-list .member')]\
             .find((li) => li.querySelector('.member-name').textContent === 'bob'); \
             return li ? li.dataset.userId : null",
            &[],
        )
        .await;
    let bob_row = format!("#member-list .member[data-user-id={bob_id}]");
    alice
        .wait_text(&format!("{bob_row} .set-role"), "Make admin")
        .await;
    alice.click(&format!("{bob_row} .set-role")).await;
    alice.wait_text(&format!("{bob_row} .role"), "admin").await;
    alice
        .wait_text(&format!("{bob_row} .set-role"), "Make member")
        .await;
    // Next to their buttons the names stay readable (they were squeezed to nothing).
    let squeezed = alice
        .js(
            "return [...document.querySelectorAll('#member-list .member-name')]\
             .filter((e) => e.scrollWidth > e.clientWidth).map((e) => e.textContent)",
            &[],
        )
        .await;
    assert_eq!(squeezed, json!([]), "member names cut");
    bob.click("#details-button").await;
    bob.wait_visible("#add-member-form").await;
    bob.wait_visible("#rename-form").await;
    // An admin removes plain members only, and changes no roles.
    let carol_row = format!("#member-list .member[data-user-id=\"{}\"]", carol.user_id);
    bob.wait_visible(&format!("{carol_row} .remove-member"))
        .await;
    assert_eq!(
        bob.js(
            "return document.querySelectorAll('#member-list .set-role').length",
            &[]
        )
        .await,
        json!(0)
    );
    bob.click("#panel-close").await;

    step(start, "presence offline");
    // Bob closes his browser: alice sees him go offline, with a last-seen time.
    alice.open_room(&room).await;
    alice
        .wait_eq(
            "bob online",
            ROOM_PRESENCE,
            &[],
            json!(["online", "online"]),
        )
        .await;
    bob.close().await;
    alice
        .wait_eq(
            "bob offline",
            ROOM_PRESENCE,
            &[],
            json!(["last seen just now", "offline"]),
        )
        .await;
    alice
        .wait_eq("bob's dot", DOT_STATE, &[json!(room)], json!("offline"))
        .await;
    alice.assert_no_alert().await;
    alice.close().await;
    step(start, "done");
}

/// Records every toast the page shows (they vanish after a few seconds) in
/// `window.__toasts` as `[kind, text]`.
const RECORD_TOASTS: &str = "window.__toasts = []; \
     new MutationObserver((ms) => ms.forEach((m) => m.addedNodes.forEach((n) => \
     __toasts.push([n.classList.contains('error') ? 'error' : 'info', n.textContent])))) \
     .observe(document.querySelector('#toasts'), { childList: true })";

/// Counts the page's `GET /api/v1/rooms` answers in `window.__roomLoads`, each
/// once the page has done with it (a task after the answer's JSON is read);
/// installed once, returns the count so far.
const COUNT_ROOM_LOADS: &str = "if (window.__roomLoads === undefined) { \
     window.__roomLoads = 0; const f = window.fetch; \
     window.fetch = async (...a) => { const r = await f(...a); \
     const url = String(a[0]?.url ?? a[0]); const m = a[1]?.method ?? 'GET'; \
     if (m === 'GET' && url.endsWith('/api/v1/rooms')) { const j = r.json.bind(r); \
     r.json = async () => { const v = await j(); \
     setTimeout(() => { window.__roomLoads += 1; }, 0); return v; }; } \
     return r; }; } \
     return window.__roomLoads";

/// The room ids of the room list, top to bottom.
const ROOM_ORDER: &str = "return [...document.querySelectorAll('#room-list li.room-item')]\
     .map((li) => li.dataset.roomId)";

/// What a user with many rooms meets: every room's delivered mark is raised
/// after login under the node's default frame rate limit, with no error;
/// the room list stays in order of activity when a room event reloads it;
/// being removed from a room while typing in it is told plainly, not as an
/// error; a message of 2,500 emoji (4,000 characters allowed) is sent whole;
/// and a mangled room link still connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_many_rooms_in_a_real_browser() {
    const ROOMS: usize = 120;
    let start = Instant::now();
    let dir = data_dir();
    // The WebSocket frame limit stays at its default (50/s, bursts of 100).
    let mut flags = NODE_FLAGS.to_vec();
    flags.extend(["--api-rate-per-user", "0"]);
    let node = Node::start_with(dir.path(), &flags).await;
    let driver = Driver::start().await;
    let browser = driver.open("bob", 1280, 900);

    step(start, "many rooms, one new message in each");
    let bob_name = unique("bob");
    let bob = registered(&node, &bob_name).await;
    let alice = user(&node, "alice").await;
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        rooms.push(room_id(
            &group(&node, &alice, &format!("room {i}"), &[&bob]).await,
        ));
    }
    let mut ws = Client::connect(&node, &alice.token).await;
    for room in &rooms {
        say(&mut ws, room, "news").await;
        tokio::time::sleep(Duration::from_millis(25)).await; // inside alice's own frame limit
    }

    step(start, "bob logs in: every room delivered, no error");
    let bob_browser = browser.await;
    bob_browser.goto(&node.base).await;
    bob_browser.wait_visible("#auth-view").await;
    bob_browser.js(RECORD_TOASTS, &[]).await;
    bob_browser.login(&bob_name, PASSWORD).await;
    bob_browser.wait_signed_in(&bob_name).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(&node, "GET", "/api/v1/rooms", Some(&bob.token), None).await;
        let behind: Vec<String> = r.body["rooms"]
            .as_array()
            .expect("rooms")
            .iter()
            .filter(|r| r["delivered_seq"] != r["last_seq"])
            .map(|r| r["room_id"].to_string())
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {ROOMS} rooms never marked delivered; toasts: {}",
            behind.len(),
            bob_browser.js("return __toasts", &[]).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(bob_browser.js("return __toasts", &[]).await, json!([]));

    step(start, "the list keeps its order of activity");
    let order = bob_browser
        .wait_for("all rooms listed", ROOM_ORDER, &[], |v| {
            v.as_array().is_some_and(|a| a.len() == ROOMS)
        })
        .await;
    let last = order[ROOMS - 1].as_str().expect("room id").to_string();
    say(&mut ws, &last, "this one is busy").await;
    bob_browser
        .wait_for("the busy room on top", ROOM_ORDER, &[], |v| {
            v[0] == json!(last)
        })
        .await;
    // A new room reloads the list from the server (which orders by creation).
    let loads = bob_browser.js(COUNT_ROOM_LOADS, &[]).await;
    let fresh = room_id(&group(&node, &alice, "fresh", &[&bob]).await);
    bob_browser
        .wait_for("the list reloaded", "return __roomLoads", &[], |v| {
            v.as_u64() > loads.as_u64()
        })
        .await;
    bob_browser
        .wait_for(
            "the new room on top, the busy one next",
            ROOM_ORDER,
            &[],
            |v| v[0] == json!(fresh) && v[1] == json!(last),
        )
        .await;
    let last_name = bob_browser
        .js(
            "return document.querySelector(`#room-list li.room-item[data-room-id=\"${arguments[0]}\"] .room-name`).textContent",
            &[json!(last)],
        )
        .await;

    step(start, "removed while typing");
    bob_browser.open_room(&last).await;
    bob_browser.type_into("#composer", "half a thought").await;
    let r = call(
        &node,
        "DELETE",
        &format!("/api/v1/rooms/{last}/members/{}", bob.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.body);
    bob_browser
        .wait_js(
            "a notice of the removal",
            "return __toasts.find(([k, t]) => k === 'info' && t.includes(arguments[0]))",
            &[last_name],
        )
        .await;
    bob_browser
        .wait_for("the room gone from the list", ROOM_ORDER, &[], |v| {
            v.as_array().is_some_and(|a| !a.contains(&json!(last)))
        })
        .await;
    // Anything the client sent about the room it left would come back as an error.
    ws.send_message(&fresh, &unique("m"), "after").await;
    bob_browser.open_room(&fresh).await;
    bob_browser.wait_bodies(&["after"]).await;
    let errors = bob_browser
        .js("return __toasts.filter(([k]) => k === 'error')", &[])
        .await;
    assert_eq!(errors, json!([]));

    step(start, "2,500 emoji");
    let emoji = "\u{1F600}".repeat(2500);
    let typed = bob_browser
        .js(
            "const c = document.querySelector('#composer'); c.focus(); \
             document.execCommand('insertText', false, arguments[0]); \
             return [...c.value].length",
            &[json!(emoji)],
        )
        .await;
    assert_eq!(typed, json!(2500), "the composer cut the text");
    bob_browser.click("#send-button").await;
    bob_browser.wait_bodies(&["after", emoji.as_str()]).await;
    let stored = all_messages(&node, &bob, &fresh).await;
    assert_eq!(stored.last().map(|m| m["body"].clone()), Some(json!(emoji)));

    step(start, "a mangled room link");
    // Opened afresh (a reload), not just a hash change of the open page.
    bob_browser
        .goto(&format!("{}/#room/%E0%A4%A", node.base))
        .await;
    bob_browser.wd.refresh().await.expect("reload");
    bob_browser.wait_signed_in(&bob_name).await;
    bob_browser.assert_no_alert().await;
    bob_browser.close().await;
    step(start, "done");
}

/// Registers `name` with the password the browsers type, and logs in.
async fn registered(node: &Node, name: &str) -> User {
    let r = call(
        node,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(json!({"username": name, "password": PASSWORD})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    login(node, name, PASSWORD).await
}

/// Sends a message over a WebSocket client and waits for its ack.
async fn say(ws: &mut Client, room: &str, body: &str) {
    let ack = ws.send_message(room, &unique("shot"), body).await;
    assert_eq!(ack["type"], "sent", "{ack}");
}

/// Takes the README's screenshots of the main views (and checks they are
/// real PNGs). They go to a temporary directory, or to `PARLEY_SCREENSHOTS_DIR`
/// when set: `PARLEY_SCREENSHOTS_DIR=docs/images cargo test -p parley-node
/// --test browser screenshots` regenerates the committed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = std::env::var_os("PARLEY_SCREENSHOTS_DIR")
        // Relative to the repository root (tests run in node/).
        .map(|d| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(d))
        .unwrap_or_else(|| scratch.path().to_path_buf());
    std::fs::create_dir_all(&out).expect("screenshot directory");
    let dir = data_dir();
    let node = Node::start_with(dir.path(), NODE_FLAGS).await;
    let driver = Driver::start().await;
    let browser = driver.open("alice", 1280, 800).await;
    browser.set_viewport(1280, 800).await;
    browser.goto(&node.base).await;
    browser.wait_visible("#auth-view").await;
    browser.fill("#login-username", "alice").await;
    browser.screenshot(&out.join("login.png")).await;

    // alice signs up in the browser; the others are API and WebSocket clients.
    browser.fill("#login-password", PASSWORD).await;
    browser.click("#register-button").await;
    browser.wait_signed_in("alice").await;
    let alice = login(&node, "alice", PASSWORD).await;
    let mut people = Vec::new();
    for name in ["bob", "carol", "dave"] {
        people.push(registered(&node, name).await);
    }
    let [bob, carol, dave] = [&people[0], &people[1], &people[2]];
    let direct = |with: &User| {
        let (node, token, name) = (&node, alice.token.clone(), with.username.clone());
        async move {
            let r = call(
                node,
                "POST",
                "/api/v1/rooms/direct",
                Some(&token),
                Some(json!({ "username": name })),
            )
            .await;
            room_id(&r.body)
        }
    };
    let with_carol = direct(carol).await;
    let trip = room_id(&group(&node, &alice, "Weekend trip", &[bob, carol, dave]).await);
    let with_bob = direct(bob).await;

    let mut a = Client::connect(&node, &alice.token).await;
    let mut b = Client::connect(&node, &bob.token).await;
    let mut c = Client::connect(&node, &carol.token).await;
    let mut d = Client::connect(&node, &dave.token).await;
    say(&mut c, &with_carol, "Did you get the tickets?").await;
    say(&mut d, &trip, "Cabin is booked for Friday to Sunday!").await;
    say(
        &mut c,
        &trip,
        "Amazing. I can drive, there is room for three.",
    )
    .await;
    say(&mut a, &trip, "I'm in. Who brings the board games?").await;
    say(&mut b, &trip, "Me! And the good coffee.").await;
    say(
        &mut b,
        &with_bob,
        "Hey Alice, are we still on for climbing tomorrow?",
    )
    .await;
    say(&mut a, &with_bob, "Yes! 10:00 at the usual gym?").await;
    say(&mut b, &with_bob, "Perfect. I'll bring the spare harness.").await;
    say(&mut a, &with_bob, "Great. Don't forget the chalk this time").await;
    say(&mut a, &with_bob, "<b>not bold</b>: markup shows as text").await;
    // Bob has read everything but the last one; carol leaves (last seen).
    b.send(json!({"type": "read", "room_id": with_bob, "seq": 4}))
        .await;
    b.send(json!({"type": "delivered", "room_id": with_bob, "seq": 5}))
        .await;
    c.close().await;
    d.close().await;

    // The conversation with bob, who is typing.
    browser.open_room(&with_bob).await;
    browser.wait_status(5, "delivered").await;
    browser.wait_status(4, "seen").await;
    b.send(json!({"type": "typing", "room_id": with_bob, "active": true}))
        .await;
    browser
        .wait_text("#typing-indicator", "bob is typing…")
        .await;
    browser
        .wait_eq(
            "bob online",
            ROOM_PRESENCE,
            &[],
            json!(["online", "online"]),
        )
        .await;
    browser
        .wait_eq(
            "carol's dot",
            DOT_STATE,
            &[json!(with_carol)],
            json!("offline"),
        )
        .await;
    browser.js("document.activeElement.blur()", &[]).await;
    browser.screenshot(&out.join("chat.png")).await;

    // The group with its members panel.
    browser.open_room(&trip).await;
    browser
        .wait_bodies(&[
            "Cabin is booked for Friday to Sunday!",
            "Amazing. I can drive, there is room for three.",
            "I'm in. Who brings the board games?",
            "Me! And the good coffee.",
        ])
        .await;
    browser.click("#details-button").await;
    browser.wait_visible("#add-member-form").await;
    browser
        .wait_eq(
            "four members",
            "return document.querySelectorAll('#member-list .member').length",
            &[],
            json!(4),
        )
        .await;
    browser.js("document.activeElement.blur()", &[]).await;
    browser.screenshot(&out.join("group.png")).await;
    browser.click("#panel-close").await;

    // Phone-sized: the room list, then a conversation.
    browser.set_viewport(390, 844).await;
    browser.click("#back-button").await;
    browser.wait_visible("#room-list").await;
    browser.screenshot(&out.join("phone-rooms.png")).await;
    browser.open_room(&with_bob).await;
    browser.wait_visible("#composer").await;
    browser.screenshot(&out.join("phone-chat.png")).await;

    a.close().await;
    b.close().await;
    browser.close().await;
}
