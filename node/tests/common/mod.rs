//! Test support: real `parley-node` processes on loopback and real clients.
//!
//! Every test starts its own node(s) on free 127.0.0.1 ports with its own
//! data directory, and talks to them over real HTTP and WebSocket
//! connections. Nodes are killed when dropped.

#![allow(dead_code)]

pub mod raw_ws;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The JWT secret every test node uses (so tests can forge/expire tokens).
pub const SECRET: &str = "test-secret-0123456789abcdef";

/// A free loopback port.
pub fn free_port() -> u16 {
    ports::free_port().expect("a free port")
}

/// The load-test harness's port picker, shared by path: it keeps ports away
/// from the kernel's ephemeral range (see its docs for why).
#[path = "../../../loadtest/src/ports.rs"]
mod ports;

/// A running node process.
pub struct Node {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    extra: Vec<String>,
}

/// A data directory that lives as long as the test.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

impl Node {
    /// Starts a node on a fresh port with generous limits and cheap password hashing.
    pub async fn start(dir: &Path) -> Node {
        Self::start_with(dir, &[]).await
    }

    /// Starts a node with extra flags (later flags override earlier ones).
    pub async fn start_with(dir: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let mut node = Node {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            data_dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn().await;
        node
    }

    /// Starts a node and waits only until it answers `/health` (not `/ready`).
    pub async fn start_unready(dir: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let mut node = Node {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            addr: format!("127.0.0.1:{port}"),
            data_dir: dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn_until("/health").await;
        node
    }

    async fn spawn(&mut self) {
        self.spawn_until("/ready").await
    }

    async fn spawn_until(&mut self, probe: &str) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_parley-node"));
        cmd.arg("--listen")
            .arg(&self.addr)
            .arg("--data-dir")
            .arg(&self.data_dir);
        // The node refuses a flag given twice, so a default the caller
        // overrides in `extra` is left out.
        let defaults = [
            ("--jwt-secret", SECRET),
            ("--argon2-memory-kib", "64"),
            ("--argon2-iterations", "1"),
            ("--login-rate-per-ip", "0"),
            ("--login-rate-per-user", "0"),
            ("--register-rate-per-ip", "0"),
            ("--log-format", "pretty"),
        ];
        for (flag, value) in defaults {
            let overridden = self
                .extra
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
            if !overridden {
                cmd.args([flag, value]);
            }
        }
        // The node's warnings go to a file beside its data, so that a node
        // that dies at start-up can say why in the test's panic message.
        let log_path = self.stderr_path();
        let stderr = if std::env::var_os("PARLEY_TEST_LOGS").is_some() {
            Stdio::inherit()
        } else {
            std::fs::create_dir_all(&self.data_dir).expect("data dir");
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("node log file");
            Stdio::from(file)
        };
        cmd.args(&self.extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("spawn parley-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}{probe}", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!(
                        "parley-node on {} exited early: {status}; its stderr:\n{log}",
                        self.addr
                    );
                }
            }
            assert!(Instant::now() < deadline, "node did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What this node has written to stderr so far (its warnings).
    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// Where this node's stderr goes (one file per listen port).
    fn stderr_path(&self) -> PathBuf {
        let port = self.addr.rsplit(':').next().unwrap_or("node");
        self.data_dir.join(format!("node-{port}.stderr"))
    }

    /// SIGKILL, no cleanup.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// SIGTERM and wait for exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = c.id().expect("pid") as i32;
        // SAFETY-free: plain kill(2) through the `kill` command.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        tokio::time::timeout(Duration::from_secs(20), c.wait())
            .await
            .expect("node did not stop after SIGTERM")
            .expect("wait")
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the running node.
    pub fn signal(&self, name: &str) {
        let pid = self.pid().expect("running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill(1)");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Starts the process again on the same port and data dir.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// The process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The node's threads as (name, voluntary context switches), from
    /// `/proc/PID/task`: a thread that keeps being woken up to work counts up.
    pub fn threads(&self) -> Vec<(String, u64)> {
        let Some(pid) = self.pid() else {
            return Vec::new();
        };
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("read /proc task list");
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?;
                let status = std::fs::read_to_string(dir.join("status")).ok()?;
                let switches = status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
                    .trim()
                    .parse()
                    .ok()?;
                Some((name.trim_end().to_string(), switches))
            })
            .collect()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// A URL on this node.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The text of `/metrics`, read over a connection of its own.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }
}

/// The value of metric `name` (labelled with `node` only) in a `/metrics`
/// text; panics when it is missing.
pub fn metric_in(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

/// The seconds of a `Retry-After` header; panics when it is missing or not
/// a number of seconds.
pub fn retry_after_secs(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in seconds: {headers:?}"))
}

/// An HTTP answer: status and JSON body (Null if none).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

/// Sends a request with an optional bearer token and JSON body.
pub async fn call(
    node: &Node,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, node.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub username: String,
    pub password: String,
    pub token: String,
    pub refresh: String,
}

static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A unique username with a prefix.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}_{}_{n}", std::process::id() % 100_000)
}

/// Registers and logs in a new user.
pub async fn user(node: &Node, prefix: &str) -> User {
    let username = unique(prefix);
    let password = "password123".to_string();
    let r = call(
        node,
        "POST",
        "/api/v1/auth/register",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(r.status, 201, "register: {:?}", r.body);
    login(node, &username, &password).await
}

/// Logs in an existing user.
pub async fn login(node: &Node, username: &str, password: &str) -> User {
    let r = call(
        node,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(r.status, 200, "login: {:?}", r.body);
    User {
        user_id: r.body["user"]["user_id"]
            .as_str()
            .expect("user_id")
            .to_string(),
        username: username.to_string(),
        password: password.to_string(),
        token: r.body["access_token"].as_str().expect("token").to_string(),
        refresh: r.body["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_string(),
    }
}

/// Creates a group room owned by `owner` with `members`; returns the room JSON.
pub async fn group(node: &Node, owner: &User, name: &str, members: &[&User]) -> Value {
    let names: Vec<&str> = members.iter().map(|u| u.username.as_str()).collect();
    let r = call(
        node,
        "POST",
        "/api/v1/rooms",
        Some(&owner.token),
        Some(json!({"name": name, "members": names})),
    )
    .await;
    assert_eq!(r.status, 201, "create room: {:?}", r.body);
    r.body
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client.
pub struct Client {
    ws: Ws,
    /// The `hello` frame.
    pub hello: Value,
    /// Frames read but not yet consumed by an expectation.
    backlog: Vec<Value>,
}

/// How long expectations wait by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// Result of reading from a socket.
#[derive(Debug)]
pub enum Read {
    /// A JSON text frame.
    Frame(Value),
    /// The server closed with this code.
    Closed(Option<u16>),
    /// Nothing within the time.
    Timeout,
}

impl Client {
    /// Connects with `?token=` and waits for `hello`.
    pub async fn connect(node: &Node, token: &str) -> Client {
        let url = format!("ws://{}/ws?token={}", node.addr, token);
        Self::connect_request(url).await
    }

    /// Connects with an `Authorization: Bearer` header and waits for `hello`.
    pub async fn connect_bearer(node: &Node, token: &str) -> Client {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{}/ws", node.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        Self::connect_request(req).await
    }

    async fn connect_request(
        req: impl tokio_tungstenite::tungstenite::client::IntoClientRequest + Unpin,
    ) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("ws connect");
        let mut c = Client {
            ws,
            hello: Value::Null,
            backlog: Vec::new(),
        };
        let hello = c.expect(|f| f["type"] == "hello").await;
        c.hello = hello;
        c
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    /// Sends several frames in one write (one TCP segment on loopback), so
    /// the node reads them back to back.
    pub async fn send_together(&mut self, frames: &[Value]) {
        for v in frames {
            self.ws
                .feed(Message::Text(v.to_string().into()))
                .await
                .expect("ws feed");
        }
        self.ws.flush().await.expect("ws flush");
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, s: &str) {
        self.ws
            .send(Message::Text(s.to_string().into()))
            .await
            .expect("ws send");
    }

    /// Sends raw text; false if the socket is already broken.
    pub async fn try_send_text(&mut self, s: &str) -> bool {
        self.ws
            .send(Message::Text(s.to_string().into()))
            .await
            .is_ok()
    }

    /// Sends a frame as it is (the library checks nothing: for frames that
    /// break the protocol).
    pub async fn send_frame(
        &mut self,
        frame: tokio_tungstenite::tungstenite::protocol::frame::Frame,
    ) {
        self.ws.send(Message::Frame(frame)).await.expect("ws send");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("ws send");
    }

    /// Waits for an `error` frame whose `ref` equals `r` (`None`: an error without a ref).
    pub async fn expect_error(&mut self, r: Option<&str>) -> Value {
        let want = r.map(|s| Value::String(s.to_string()));
        self.expect(move |f| {
            f["type"] == "error"
                && match &want {
                    Some(w) => &f["ref"] == w,
                    None => f.get("ref").is_none_or(Value::is_null),
                }
        })
        .await
    }

    /// Sends a `ping` and waits for its `pong` (the connection still works).
    pub async fn ping_pong(&mut self, r: &str) {
        self.send(json!({"type": "ping", "ref": r})).await;
        self.expect(|f| f["type"] == "pong" && f["ref"] == r).await;
    }

    /// Frames read but not yet consumed, in arrival order.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.backlog)
    }

    /// Reads the next frame from the socket (not the backlog).
    pub async fn read(&mut self, wait: Duration) -> Read {
        match tokio::time::timeout(wait, self.ws.next()).await {
            Err(_) => Read::Timeout,
            Ok(None) => Read::Closed(None),
            Ok(Some(Err(_))) => Read::Closed(None),
            Ok(Some(Ok(Message::Text(t)))) => {
                Read::Frame(serde_json::from_str(&t).expect("server sent JSON"))
            }
            Ok(Some(Ok(Message::Close(f)))) => Read::Closed(f.map(|f| u16::from(f.code))),
            Ok(Some(Ok(_))) => Box::pin(self.read(wait)).await,
        }
    }

    /// Waits for a frame matching `pred`, keeping the others for later.
    pub async fn expect(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                Read::Frame(f) if pred(&f) => return f,
                Read::Frame(f) => self.backlog.push(f),
                other => panic!(
                    "expected frame not seen: {other:?}; backlog: {:?}",
                    self.backlog
                ),
            }
        }
    }

    /// Asserts that no frame matching `pred` arrives within `wait`.
    pub async fn expect_none(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) {
        assert!(
            !self.backlog.iter().any(&pred),
            "unexpected frame in backlog: {:?}",
            self.backlog
        );
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.read(left).await {
                Read::Frame(f) => {
                    assert!(!pred(&f), "unexpected frame: {f}");
                    self.backlog.push(f);
                }
                Read::Timeout => return,
                Read::Closed(c) => panic!("socket closed ({c:?}) while waiting"),
            }
        }
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn expect_close(&mut self) -> Option<u16> {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left).await {
                Read::Frame(f) => self.backlog.push(f),
                Read::Closed(c) => return c,
                Read::Timeout => panic!("socket not closed in time"),
            }
        }
    }

    /// Sends a message and waits for its `sent` ack; returns the ack.
    pub async fn send_message(&mut self, room_id: &str, client_msg_id: &str, body: &str) -> Value {
        let r = format!("ref-{client_msg_id}");
        self.send(json!({"type": "send", "ref": r, "room_id": room_id, "client_msg_id": client_msg_id, "body": body})).await;
        self.expect(|f| (f["type"] == "sent" || f["type"] == "error") && f["ref"] == r.as_str())
            .await
    }

    /// Sends a message like [`Client::send_message`], again with the same
    /// id (idempotent) while it is refused, up to 5 s: a room that is moving
    /// between owners answers `unavailable` for a moment.
    pub async fn send_message_until_sent(
        &mut self,
        room_id: &str,
        client_msg_id: &str,
        body: &str,
    ) -> Value {
        let mut answer = self.send_message(room_id, client_msg_id, body).await;
        for _ in 0..50 {
            if answer["type"] == "sent" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer = self.send_message(room_id, client_msg_id, body).await;
        }
        answer
    }

    /// Drains every `message` frame of a room until `seq` has been seen.
    pub async fn messages_until(&mut self, room_id: &str, seq: u64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let f = self
                .expect(|f| f["type"] == "message" && f["room_id"] == room_id)
                .await;
            let s = f["seq"].as_u64().expect("seq");
            out.push(f);
            if s >= seq {
                return out;
            }
        }
    }

    /// Closes the socket from the client side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        // Read until the server's close frame so the close is complete.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Makes this client's machine vanish from the network without closing
    /// anything: a socket filter drops every packet to the client's socket
    /// before TCP sees it, so nothing is acknowledged and no FIN is sent.
    pub fn vanish(&self) {
        use std::os::fd::AsRawFd;
        let MaybeTlsStream::Plain(tcp) = self.ws.get_ref() else {
            panic!("only plain sockets can vanish");
        };
        // One classic BPF instruction, `ret #0`: keep no byte of any packet.
        let mut drop_all = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let program = libc::sock_fprog {
            len: 1,
            filter: drop_all.as_mut_ptr(),
        };
        // SAFETY: `program` and the instruction it points to outlive the call,
        // and the length passed is the size of `program`.
        let rc = unsafe {
            libc::setsockopt(
                tcp.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&program as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "SO_ATTACH_FILTER: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Close code constant for comparisons.
    pub fn code(c: CloseCode) -> u16 {
        u16::from(c)
    }
}

/// Tries a WebSocket upgrade and returns the HTTP status of a refusal (or 101).
pub async fn upgrade_status(
    node: &Node,
    query_token: Option<&str>,
    header_token: Option<&str>,
) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = match query_token {
        Some(t) => format!("ws://{}/ws?token={}", node.addr, t),
        None => format!("ws://{}/ws", node.addr),
    };
    let mut req = url.into_client_request().expect("request");
    if let Some(t) = header_token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected ws error: {e}"),
    }
}

/// Sends a request with explicit headers and a raw body (bytes as given).
pub async fn call_raw(
    node: &Node,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Answer {
    let http = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = http.request(method, node.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.body(b);
    }
    let resp = req.send().await.expect("http");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// Asserts a contract error answer: the status, a JSON body of exactly
/// `{"error":{"code","message"}}` with the given code. Returns the message.
#[track_caller]
pub fn assert_error(a: &Answer, status: u16, code: &str) -> String {
    assert_eq!(a.status, status, "status (want {code}); body: {}", a.body);
    let err = a
        .body
        .get("error")
        .unwrap_or_else(|| panic!("{status} body is not a contract error: {:?}", a.body));
    assert_eq!(err["code"], code, "error code; body: {}", a.body);
    let message = err["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error.message must be a string: {}", a.body));
    assert!(!message.is_empty(), "error.message is empty: {}", a.body);
    if let Some(ct) = a.headers.get("content-type") {
        assert!(
            ct.to_str().unwrap_or("").starts_with("application/json"),
            "error content-type: {ct:?}"
        );
    }
    message.to_string()
}

/// The `room_id` of a room JSON.
pub fn room_id(room: &Value) -> String {
    room["room_id"].as_str().expect("room_id").to_string()
}

/// `GET /api/v1/rooms/{room_id}/messages{query}` as `user`.
pub async fn history(node: &Node, user: &User, room_id: &str, query: &str) -> Answer {
    call(
        node,
        "GET",
        &format!("/api/v1/rooms/{room_id}/messages{query}"),
        Some(&user.token),
        None,
    )
    .await
}

/// Every message of a room, read through history pages (oldest first).
pub async fn all_messages(node: &Node, user: &User, room_id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let page = history(
            node,
            user,
            room_id,
            &format!("?after_seq={after}&limit=200"),
        )
        .await;
        assert_eq!(page.status, 200, "history: {}", page.body);
        let msgs = page.body["messages"].as_array().expect("messages").clone();
        if let Some(last) = msgs.last() {
            after = last["seq"].as_u64().expect("seq");
        }
        out.extend(msgs);
        if page.body["has_more"] != true {
            return out;
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// HMAC-SHA256 (RFC 2104), by hand on top of `sha2`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWT with the given header and claims, signed HS256 with `secret`
/// (whatever `alg` the header claims).
pub fn jwt_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig))
}

/// An unsigned `alg: none` JWT.
pub fn jwt_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// Access-token claims for `user` expiring `exp_in` seconds from now (negative: past).
pub fn claims_for(user: &User, exp_in: i64) -> Value {
    let now = now_secs() as i64;
    json!({
        "sub": user.user_id,
        "name": user.username,
        "iat": now - 10,
        "exp": now + exp_in,
    })
}

/// An access token for `user` signed with `secret`.
pub fn token_signed(secret: &[u8], user: &User, exp_in: i64) -> String {
    jwt_hs256(
        secret,
        &json!({"alg": "HS256", "typ": "JWT"}),
        &claims_for(user, exp_in),
    )
}

/// The cluster secret every test cluster uses.
pub const CLUSTER_SECRET: &str = "test-cluster-secret-0123456789";

/// Starts `n` clustered nodes sharing one data dir and waits until every
/// node sees all of them. Extra flags go to every node.
pub async fn start_cluster(dir: &Path, n: usize, extra: &[&str]) -> Vec<Node> {
    start_cluster_with_seeds(dir, n, extra).await.0
}

/// Like [`start_cluster`], also returning the seed list (to add nodes later).
pub async fn start_cluster_with_seeds(dir: &Path, n: usize, extra: &[&str]) -> (Vec<Node>, String) {
    let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let seeds: Vec<String> = cluster_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let seeds = seeds.join(",");
    let mut nodes = Vec::new();
    for (i, port) in cluster_ports.iter().enumerate() {
        nodes.push(start_cluster_node(dir, &format!("n{}", i + 1), *port, &seeds, extra).await);
    }
    for node in &nodes {
        wait_members(node, n).await;
    }
    (nodes, seeds)
}

/// Runs `parley-node` with `args` to its exit and returns its stderr;
/// panics when it started (it must refuse these settings: still running
/// after 20 s, it is killed), or when it opened its store first (settings
/// are checked before anything starts).
pub fn refused(dir: &Path, args: &[&str]) -> String {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parley-node"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--cluster-secret",
            CLUSTER_SECRET,
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run parley-node");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for parley-node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started with {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the node started with {args:?}");
    assert!(
        !dir.join("parley.db").exists(),
        "the store was opened before {args:?} were refused"
    );
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    stderr
}

/// Starts a node named `name` that is a cluster of its own (a cluster port,
/// no seeds). Such nodes may share a data directory (its lock is shared by
/// clustered nodes), and each runs every room it is asked about, as two
/// owners would if a partition split a cluster.
pub async fn start_cluster_of_one(dir: &Path, name: &str, extra: &[&str]) -> Node {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut args = vec![
        "--node-name",
        name,
        "--cluster-listen",
        &listen,
        "--cluster-secret",
        CLUSTER_SECRET,
    ];
    args.extend_from_slice(extra);
    Node::start_with(dir, &args).await
}

/// Starts one clustered node named `name` on cluster port `port`, joining `seeds`.
pub async fn start_cluster_node(
    dir: &Path,
    name: &str,
    port: u16,
    seeds: &str,
    extra: &[&str],
) -> Node {
    let mut args: Vec<String> = vec![
        "--node-name".into(),
        name.into(),
        "--cluster-listen".into(),
        format!("127.0.0.1:{port}"),
        "--seeds".into(),
        seeds.into(),
        "--cluster-secret".into(),
        CLUSTER_SECRET.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_with(dir, &refs).await
}

/// Waits until `node` sees exactly `n` live members.
/// Waits until `node`'s `/api/v1/cluster` lists `n` names under `field`.
async fn wait_cluster_list(node: &Node, field: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = call(node, "GET", "/api/v1/cluster", None, None).await;
        if r.body[field].as_array().map(|a| a.len()) == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cluster `{field}` did not reach {n}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `node` sees `n` live members.
pub async fn wait_members(node: &Node, n: usize) {
    wait_cluster_list(node, "live", n).await;
}

/// Waits until `node` places rooms on `n` members (every live one has
/// finished joining).
pub async fn wait_owners(node: &Node, n: usize) {
    wait_cluster_list(node, "owners", n).await;
}
