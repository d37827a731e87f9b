//! A WebSocket spoken by hand over a TCP socket, for clients that do what
//! no library lets them: stop halfway through a frame.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Node;

/// A client WebSocket over a plain socket.
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read and not yet taken as frames.
    buf: Vec<u8>,
}

/// A frame from the server.
#[derive(Debug)]
pub struct RawFrame {
    /// The opcode (1 text, 8 close, ...).
    pub opcode: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// The header of a masked (with a zero key, so the payload goes as is)
/// final text frame of `len` payload bytes.
pub fn text_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x81];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A whole text frame carrying a `ping` with `r` as its ref, padded to
/// `size` bytes of payload.
pub fn padded_ping(r: &str, size: usize) -> Vec<u8> {
    let head = format!(r#"{{"type":"ping","ref":"{r}","pad":""#);
    let pad = size.saturating_sub(head.len() + 2);
    let payload = format!("{head}{}\"}}", "x".repeat(pad));
    let mut f = text_header(payload.len());
    f.extend_from_slice(payload.as_bytes());
    f
}

impl RawWs {
    /// Upgrades a new connection to `node` with `token`.
    pub async fn connect(node: &Node, token: &str) -> RawWs {
        let mut stream = TcpStream::connect(node.addr.as_str())
            .await
            .expect("connect");
        let upgrade = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            node.addr
        );
        stream.write_all(upgrade.as_bytes()).await.expect("upgrade");
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.fill(super::WAIT).await, "no answer to the upgrade");
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        ws.buf.drain(..end);
        ws
    }

    /// Sends `bytes` as they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more into the buffer; false on timeout, end or error.
    async fn fill(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            _ => false,
        }
    }

    /// The next frame from the server within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<RawFrame> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.fill(left).await {
                return None;
            }
        }
    }

    /// A whole (unmasked) frame off the front of the buffer, if there is one.
    fn take_frame(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => return None,
            short => (short as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let frame = RawFrame {
            opcode: b[0] & 0x0f,
            payload: b[at..at + len].to_vec(),
        };
        self.buf.drain(..at + len);
        Some(frame)
    }

    /// Whether a text frame with `"ref": r` arrives within `wait`.
    pub async fn answered(&mut self, r: &str, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(f) if f.opcode == 1 => {
                    let v: Value = serde_json::from_slice(&f.payload).expect("JSON frame");
                    if v["ref"] == r {
                        return true;
                    }
                }
                Some(f) if f.opcode == 8 => return false,
                Some(_) => {}
                None => return false,
            }
        }
    }

    /// The close code the server sends within `wait` (frames before it are
    /// skipped); `None` if none comes.
    pub async fn close_code(&mut self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.next(left).await?;
            if f.opcode == 8 && f.payload.len() >= 2 {
                return Some(u16::from_be_bytes([f.payload[0], f.payload[1]]));
            }
        }
    }
}
