//! Traffic under failure: senders and receivers that reconnect to any live
//! node, resend unacked messages with the same `client_msg_id`, sync after
//! every reconnect, and a checker for the delivery guarantees.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

/// Connects to the first reachable address, starting at `start`.
async fn connect_any(
    addrs: &[String],
    start: usize,
    token: &str,
) -> Option<(
    usize,
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
)> {
    for k in 0..addrs.len() {
        let i = (start + k) % addrs.len();
        let url = format!("ws://{}/ws?token={}", addrs[i], token);
        if let Ok(Ok((ws, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio_tungstenite::connect_async(url),
        )
        .await
        {
            return Some((i, ws));
        }
    }
    None
}

/// Sends `count` messages one at a time, waiting for each ack; reconnects to
/// another node and resends (same `client_msg_id`) when a node goes away.
/// Returns (client_msg_id, seq) of every acked message.
pub async fn sender(
    addrs: Arc<Vec<String>>,
    start: usize,
    token: String,
    room_id: String,
    tag: String,
    count: usize,
    gap: Duration,
) -> Vec<(String, u64)> {
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    let mut at = start;
    while next < count && Instant::now() < deadline {
        let Some((i, mut ws)) = connect_any(&addrs, at, &token).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        at = i;
        'conn: while next < count {
            let cmid = format!("{tag}-{next}");
            let frame = json!({"type": "send", "ref": cmid, "room_id": room_id, "client_msg_id": cmid, "body": format!("{tag} #{next}")});
            if ws
                .send(Message::Text(frame.to_string().into()))
                .await
                .is_err()
            {
                break 'conn;
            }
            let wait_until = Instant::now() + Duration::from_secs(8);
            loop {
                let left = wait_until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        if v["ref"] == cmid.as_str() && v["type"] == "sent" {
                            acked.push((cmid.clone(), v["seq"].as_u64().unwrap_or(0)));
                            next += 1;
                            break;
                        }
                        if v["ref"] == cmid.as_str() && v["type"] == "error" {
                            // e.g. unavailable while a room moves: retry the same id.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            break;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    // Closed, failed or silent: try another node with the same id.
                    _ => break 'conn,
                }
            }
            tokio::time::sleep(gap).await;
        }
        at += 1;
    }
    acked
}

/// Receives a room's messages until it has seen everything up to the head
/// published on `target`; reconnects and syncs from its last seen seq after
/// any failure. Returns the seqs in the order they were received.
pub async fn receiver(
    addrs: Arc<Vec<String>>,
    start: usize,
    token: String,
    room_id: String,
    mut target: watch::Receiver<Option<u64>>,
) -> Vec<u64> {
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut at = start;
    loop {
        if Instant::now() > deadline {
            return seen;
        }
        if let Some(t) = *target.borrow() {
            if seen.last().copied().unwrap_or(0) >= t {
                return seen;
            }
        }
        let Some((i, mut ws)) = connect_any(&addrs, at, &token).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        at = i;
        let last = seen.last().copied().unwrap_or(0);
        let sync = json!({"type": "sync", "ref": "resync", "rooms": {room_id.clone(): last}});
        if ws
            .send(Message::Text(sync.to_string().into()))
            .await
            .is_err()
        {
            at += 1;
            continue;
        }
        loop {
            if let Some(t) = *target.borrow() {
                if seen.last().copied().unwrap_or(0) >= t {
                    return seen;
                }
            }
            tokio::select! {
                msg = ws.next() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        if v["type"] == "message" && v["room_id"] == room_id.as_str() {
                            seen.push(v["seq"].as_u64().unwrap_or(0));
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
                _ = target.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        at += 1;
    }
}

/// Checks the guarantees; returns the list of violations (empty = fine).
///
/// - every acked message is in history exactly once, with the seq it was acked with;
/// - history is gapless from 1 with unique `client_msg_id`s;
/// - every receiver saw every seq of history exactly once, in order.
pub fn check(acked: &[(String, u64)], history: &[Value], received: &[Vec<u64>]) -> Vec<String> {
    let mut v = Vec::new();
    let mut by_cmid: BTreeMap<String, u64> = BTreeMap::new();
    for (i, m) in history.iter().enumerate() {
        let seq = m["seq"].as_u64().unwrap_or(0);
        if seq != i as u64 + 1 {
            v.push(format!("history gap or reorder at position {i}: seq {seq}"));
        }
        let cmid = m["client_msg_id"].as_str().unwrap_or("").to_string();
        if by_cmid.insert(cmid.clone(), seq).is_some() {
            v.push(format!("client_msg_id {cmid} stored twice"));
        }
    }
    let mut acked_seqs = HashSet::new();
    for (cmid, seq) in acked {
        if !acked_seqs.insert(*seq) {
            v.push(format!("seq {seq} acked for two messages"));
        }
        match by_cmid.get(cmid) {
            Some(s) if s == seq => {}
            Some(s) => v.push(format!("{cmid} acked as seq {seq} but stored as {s}")),
            None => v.push(format!(
                "acked message {cmid} (seq {seq}) missing from history"
            )),
        }
    }
    let head = history.len() as u64;
    for (r, seqs) in received.iter().enumerate() {
        let want: Vec<u64> = (1..=head).collect();
        if *seqs != want {
            let dups = seqs.len() as i64 - seqs.iter().collect::<HashSet<_>>().len() as i64;
            v.push(format!(
                "receiver {r}: got {} messages (head {head}, {dups} duplicates, first mismatch at {:?})",
                seqs.len(),
                seqs.iter().zip(want.iter()).position(|(a, b)| a != b)
            ));
        }
    }
    v
}
