//! What crosses between nodes: [`PeerPayload`], carried as bytes in [`PeerWire`].
//!
//! Payloads are serde types encoded with `parley_protocol::codec` (bincode
//! 2.0.1, versioned envelope). [`PeerWire`] is the only actor message that
//! is ever serialized: each node's inbox actor receives it and decodes it.

use std::sync::Arc;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use serde::{Deserialize, Serialize};

use parley_protocol::http::RoomInfo;

use crate::error::ChatError;
use crate::outbound::{LiveMessage, Outbound, RoomSeq, TypingNotice};
use crate::room::ManageCmd;

/// An encoded [`PeerPayload`] travelling to another node's inbox.
#[derive(Debug)]
pub struct PeerWire(pub Vec<u8>);

impl ractor::Message for PeerWire {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        Ok(SerializedMessage::Cast {
            variant: "parley".into(),
            args: self.0,
            metadata: None,
        })
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Cast { args, .. } => Ok(PeerWire(args)),
            _ => Err(BoxedDowncastErr),
        }
    }
}

/// An event for sessions, as sent to another node's dispatcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireItem {
    /// A ready JSON frame.
    Frame(String),
    /// A `message` event with its room and seq (for ordering on the far side).
    Message {
        /// Room.
        room_id: String,
        /// Seq.
        seq: u64,
        /// The serialized event.
        json: String,
    },
    /// A head notice: the room's owner has committed up to `seq`.
    Head {
        /// Room.
        room_id: String,
        /// The room's highest committed seq.
        seq: u64,
    },
    /// A `typing` event (its JSON is made again on the far side).
    Typing {
        /// Room.
        room_id: String,
        /// The typist.
        user_id: String,
        /// Typing or stopped.
        active: bool,
    },
}

impl WireItem {
    /// The wire form of a session event; `None` for items that only make
    /// sense on the session's own node (sync and gate markers).
    pub fn from_outbound(item: &Outbound) -> Option<WireItem> {
        match item {
            Outbound::Frame(json) => Some(WireItem::Frame(json.to_string())),
            Outbound::Large(f) => Some(WireItem::Frame(f.json.to_string())),
            Outbound::Message(m) => Some(WireItem::Message {
                room_id: m.room_id.to_string(),
                seq: m.seq,
                json: m.json.to_string(),
            }),
            Outbound::Head(h) => Some(WireItem::Head {
                room_id: h.room_id.to_string(),
                seq: h.seq,
            }),
            Outbound::Typing(t) => Some(WireItem::Typing {
                room_id: t.room_id.to_string(),
                user_id: t.user_id.to_string(),
                active: t.active,
            }),
            Outbound::SyncStart(_) | Outbound::OpenGate => None,
        }
    }

    /// The local session event this wire event stands for.
    pub fn into_outbound(self) -> Outbound {
        match self {
            WireItem::Frame(json) => Outbound::frame(Arc::from(json)),
            WireItem::Message { room_id, seq, json } => Outbound::Message(Arc::new(
                LiveMessage::live(Arc::from(room_id), seq, Arc::from(json)),
            )),
            WireItem::Head { room_id, seq } => Outbound::Head(Arc::new(RoomSeq {
                room_id: Arc::from(room_id),
                seq,
            })),
            WireItem::Typing {
                room_id,
                user_id,
                active,
            } => Outbound::Typing(Arc::new(TypingNotice::new(
                Arc::from(room_id),
                Arc::from(user_id),
                active,
            ))),
        }
    }
}

/// Who asked, when the asker's session lives on another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireCaller {
    /// User id.
    pub user_id: String,
    /// Username.
    pub username: String,
    /// Node of the session.
    pub node: String,
    /// Session id.
    pub session_id: String,
}

/// A session request for a room owned by another node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WireRoomOp {
    /// `send`.
    Send {
        /// Request ref.
        r#ref: Option<String>,
        /// Idempotency key.
        client_msg_id: String,
        /// Text.
        body: String,
    },
    /// `typing`.
    Typing {
        /// Started or stopped.
        active: bool,
    },
    /// `delivered` / `read`.
    Watermark {
        /// Delivered watermark.
        delivered: u64,
        /// Read watermark.
        read: u64,
        /// Request ref.
        r#ref: Option<String>,
    },
}

impl WireRoomOp {
    /// The room actor message for this request from `from`.
    pub fn into_room_msg(self, from: crate::room::Caller) -> crate::room::RoomMsg {
        use crate::room::RoomMsg;
        match self {
            WireRoomOp::Send {
                r#ref,
                client_msg_id,
                body,
            } => RoomMsg::Send {
                from,
                r#ref,
                client_msg_id,
                body,
                trace: crate::trace::current(),
            },
            WireRoomOp::Typing { active } => RoomMsg::Typing { from, active },
            WireRoomOp::Watermark {
                delivered,
                read,
                r#ref,
            } => RoomMsg::Watermark {
                from,
                delivered,
                read,
                r#ref,
            },
        }
    }
}

/// Identifies a send awaiting its ack: (room id, client_msg_id).
pub type AckKey = (String, String);

/// One node's view of itself, sent every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Sender's node name.
    pub node: String,
    /// Sender's HTTP address (for operators and clients).
    pub http_addr: String,
    /// Sessions connected to the sender.
    pub sessions: u64,
    /// Live room actors on the sender.
    pub rooms: u64,
    /// The sender is draining and should be treated as gone.
    pub leaving: bool,
    /// The members the sender counts live (itself included).
    pub members: Vec<String>,
    /// The sender's cluster address (`ip:port`).
    pub cluster_addr: Option<String>,
    /// The cluster addresses its live peers announced as their own (only
    /// those: an address is never passed on second-hand, so a dead node's
    /// is forgotten once its peers count it dead). A node that dials its
    /// peers itself (cluster TLS) learns the rest of the cluster from these.
    pub peer_addrs: Vec<String>,
    /// The sender has finished joining: it hears every member its peers
    /// report, so what it fans out reaches the whole cluster. Only settled
    /// nodes own rooms.
    pub settled: bool,
}

/// Everything one node says to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerPayload {
    /// Liveness and stats.
    Heartbeat(Heartbeat),
    /// Deliver events, in order, to the receiving node's sessions of these users.
    Deliver {
        /// Recipients.
        users: Vec<String>,
        /// The events (one commit's messages travel together).
        items: Vec<WireItem>,
        /// A user whose sessions are skipped.
        except_user: Option<String>,
        /// Trace context (`traceparent`) of what caused the event.
        trace: Option<String>,
    },
    /// A reply for one session (acks and errors).
    ToSession {
        /// Owner of the session.
        user_id: String,
        /// The session.
        session_id: String,
        /// The frame.
        json: String,
        /// Set when this answers a routed `send` (clears the origin's retry entry).
        ack: Option<AckKey>,
    },
    /// A session request for a room this node should own.
    Room {
        /// The room.
        room_id: String,
        /// The request.
        op: WireRoomOp,
        /// Who asked.
        origin: WireCaller,
        /// Forwarding count (views may briefly differ).
        hops: u8,
        /// Trace context (`traceparent`) of the request.
        trace: Option<String>,
    },
    /// A membership/details change of a room, expecting a [`PeerPayload::Response`].
    Request {
        /// Correlation id at the origin.
        id: u64,
        /// Origin node.
        origin: String,
        /// The room.
        room_id: String,
        /// Acting user.
        by: String,
        /// The change.
        cmd: ManageCmd,
        /// Forwarding count.
        hops: u8,
    },
    /// The answer to a [`PeerPayload::Request`].
    Response {
        /// Correlation id.
        id: u64,
        /// The result.
        result: Result<RoomInfo, ChatError>,
    },
    /// The sender's users with a connected session (sent to a node that
    /// comes into the sender's view).
    PresenceSnapshot {
        /// Sender.
        node: String,
        /// Online users.
        users: Vec<String>,
        /// The receiver answers with its own snapshot: it may not have seen
        /// the sender leave and come back, and would not send one itself.
        reply: bool,
    },
    /// A user's first session opened / last session closed on the sender.
    PresenceChange {
        /// Sender.
        node: String,
        /// The user.
        user: String,
        /// Online on the sender now.
        online: bool,
    },
}

/// Encodes a payload for the wire.
pub fn encode(p: &PeerPayload) -> Option<PeerWire> {
    match parley_protocol::codec::encode(p) {
        Ok(bytes) => Some(PeerWire(bytes)),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode inter-node payload");
            None
        }
    }
}

/// Decodes a payload from the wire.
pub fn decode(w: &PeerWire) -> Result<PeerPayload, parley_protocol::codec::CodecError> {
    parley_protocol::codec::decode(&w.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::Message;

    #[test]
    fn payloads_survive_the_wire() {
        let p = PeerPayload::Room {
            room_id: "r".into(),
            op: WireRoomOp::Send {
                r#ref: Some("x".into()),
                client_msg_id: "c".into(),
                body: "héllo 😀".into(),
            },
            origin: WireCaller {
                user_id: "u".into(),
                username: "alice".into(),
                node: "n1".into(),
                session_id: "s".into(),
            },
            hops: 1,
            trace: None,
        };
        let wire = encode(&p).unwrap();
        // Through ractor's serialization, as a remote actor would carry it.
        let ser = wire.serialize().unwrap();
        let back = PeerWire::deserialize(ser).unwrap();
        match decode(&back).unwrap() {
            PeerPayload::Room {
                op: WireRoomOp::Send { body, .. },
                hops,
                ..
            } => {
                assert_eq!(body, "héllo 😀");
                assert_eq!(hops, 1);
            }
            other => panic!("{other:?}"),
        }
        assert!(decode(&PeerWire(vec![1, 2, 3])).is_err());
    }

    #[test]
    fn session_events_cross_nodes_unchanged_and_markers_stay_home() {
        let msg = Outbound::Message(Arc::new(LiveMessage::live(
            Arc::from("r1"),
            7,
            Arc::from("{\"type\":\"message\"}"),
        )));
        let frame = Outbound::Frame(Arc::from("{\"type\":\"presence\"}"));
        let typing = Outbound::Typing(Arc::new(TypingNotice::new(
            Arc::from("r1"),
            Arc::from("bob"),
            true,
        )));
        let head = Outbound::Head(Arc::new(RoomSeq {
            room_id: Arc::from("r1"),
            seq: 9,
        }));
        let items = [
            msg,
            frame,
            Outbound::OpenGate,
            Outbound::SyncStart(crate::outbound::SyncStart::new(Vec::new(), true).0),
            head,
            typing,
        ];
        let wire: Vec<WireItem> = items.iter().filter_map(WireItem::from_outbound).collect();
        assert_eq!(wire.len(), 4, "sync and gate markers are local only");
        let back: Vec<Outbound> = wire.into_iter().map(WireItem::into_outbound).collect();
        match &back[..] {
            [Outbound::Message(m), Outbound::Frame(f), Outbound::Head(h), Outbound::Typing(t)] => {
                assert_eq!(
                    (&*m.room_id, m.seq, &*m.json),
                    ("r1", 7, "{\"type\":\"message\"}")
                );
                assert_eq!(&**f, "{\"type\":\"presence\"}");
                assert_eq!((&*h.room_id, h.seq), ("r1", 9));
                assert_eq!((&*t.room_id, &*t.user_id, t.active), ("r1", "bob", true));
                assert_eq!(
                    &*t.json,
                    r#"{"type":"typing","room_id":"r1","user_id":"bob","active":true}"#
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
