//! WebSocket frames: what clients send and what the server answers.
//!
//! Every frame is one JSON object with a `"type"`. Client frames are parsed in
//! two steps so that each kind of bad input gets its own error code: not JSON
//! (`invalid_json`), JSON without a known `type` (`unknown_type`), or a known
//! type with missing or wrongly typed fields (`invalid_request`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::http::{Message, RoomInfo};
use crate::validate;

/// Close code: token invalid or expired.
pub const CLOSE_TOKEN_INVALID: u16 = 4001;
/// Close code: the client broke the WebSocket protocol (RFC 6455): a
/// reserved opcode or bit, an oversized or fragmented control frame, an
/// unmasked frame.
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code: a text frame that is not valid UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: repeated abuse.
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: frame too large.
pub const CLOSE_TOO_LARGE: u16 = 1009;
/// Close code: node going away; reconnect anywhere and `sync`.
pub const CLOSE_GOING_AWAY: u16 = 1012;
/// Close code: try again later (overload or slow consumer).
pub const CLOSE_TRY_AGAIN: u16 = 1013;

/// `send`: post a message to a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFrame {
    /// Target room.
    pub room_id: String,
    /// The client's idempotency key for this message.
    pub client_msg_id: String,
    /// Message text.
    pub body: String,
}

/// `typing`: start or stop the typing indicator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingFrame {
    /// Room the user types in.
    pub room_id: String,
    /// Whether the user is typing.
    pub active: bool,
}

/// `delivered` or `read`: raise a watermark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkFrame {
    /// The room.
    pub room_id: String,
    /// The new watermark.
    pub seq: u64,
}

/// `sync`: replay committed messages after the given seq per room.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncFrame {
    /// Last seen seq per room; `None` means every room of the user from 0.
    #[serde(default)]
    pub rooms: Option<BTreeMap<String, u64>>,
}

/// `auth`: present a fresh access token to keep the session open past the old one's expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFrame {
    /// A new access token of the same user.
    pub token: String,
}

/// A parsed, validated client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRequest {
    /// Post a message.
    Send(SendFrame),
    /// Typing indicator.
    Typing(TypingFrame),
    /// Raise the delivered watermark.
    Delivered(WatermarkFrame),
    /// Raise the read watermark.
    Read(WatermarkFrame),
    /// Replay missed messages.
    Sync(SyncFrame),
    /// Keep-alive.
    Ping,
    /// Renew the session's token.
    Auth(AuthFrame),
}

/// A client frame: the request and its optional `ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFrame {
    /// Echoed in replies and errors.
    pub r#ref: Option<String>,
    /// What the client asks for.
    pub request: ClientRequest,
}

/// Why a client frame was refused; becomes an `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The `ref` of the frame, when it could be read.
    pub r#ref: Option<String>,
    /// Error code.
    pub code: ErrorCode,
    /// Human-readable reason.
    pub message: String,
}

impl FrameError {
    fn new(r#ref: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            r#ref,
            code,
            message: message.into(),
        }
    }
}

fn fields<T: for<'de> Deserialize<'de>>(
    value: serde_json::Value,
    r#ref: &Option<String>,
) -> Result<T, FrameError> {
    serde_json::from_value(value)
        .map_err(|e| FrameError::new(r#ref.clone(), ErrorCode::InvalidRequest, e.to_string()))
}

fn check(r: Result<(), validate::Invalid>, r#ref: &Option<String>) -> Result<(), FrameError> {
    r.map_err(|e| FrameError::new(r#ref.clone(), ErrorCode::InvalidRequest, e.0))
}

/// The `ref` of a client frame that will not be handled (refused before it
/// is parsed, e.g. over the frame rate), so that its error still names the
/// request. `None` when the frame is not a JSON object or has no valid
/// string `ref`. Reads only that field.
pub fn peek_ref(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct RefOnly<'a> {
        #[serde(rename = "ref", borrow, default)]
        r#ref: Option<std::borrow::Cow<'a, str>>,
    }
    // A struct also deserializes from a JSON array; only objects have a `ref`.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let r = serde_json::from_str::<RefOnly<'_>>(text).ok()?.r#ref?;
    validate::request_ref(&r).ok()?;
    Some(r.into_owned())
}

/// Parses and validates one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // Parsed once, refusing a key given twice (it would otherwise count
    // with its last value: `{"type":"ping","type":"send"}` was a send),
    // as HTTP bodies do.
    let value = match serde_json::from_str::<UniqueKeys>(text) {
        Ok(UniqueKeys(value)) => value,
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            return Err(FrameError::new(
                peek_ref(text),
                ErrorCode::InvalidRequest,
                e.to_string(),
            ))
        }
        Err(e) => {
            return Err(FrameError::new(
                None,
                ErrorCode::InvalidJson,
                format!("invalid JSON: {e}"),
            ))
        }
    };
    let serde_json::Value::Object(map) = &value else {
        return Err(FrameError::new(
            None,
            ErrorCode::InvalidRequest,
            "a frame must be a JSON object",
        ));
    };
    let r#ref = match map.get("ref") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => {
            let r = Some(s.clone());
            check(validate::request_ref(s), &None)?;
            r
        }
        Some(_) => {
            return Err(FrameError::new(
                None,
                ErrorCode::InvalidRequest,
                "ref must be a string",
            ))
        }
    };
    let kind = match map.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(FrameError::new(
                r#ref,
                ErrorCode::InvalidRequest,
                "type must be a string",
            ))
        }
        None => {
            return Err(FrameError::new(
                r#ref,
                ErrorCode::InvalidRequest,
                "missing field `type`",
            ))
        }
    };
    let request = match kind.as_str() {
        "send" => {
            let f: SendFrame = fields(value, &r#ref)?;
            check(validate::body(&f.body), &r#ref)?;
            check(validate::client_msg_id(&f.client_msg_id), &r#ref)?;
            ClientRequest::Send(f)
        }
        "typing" => ClientRequest::Typing(fields(value, &r#ref)?),
        "delivered" => ClientRequest::Delivered(fields(value, &r#ref)?),
        "read" => ClientRequest::Read(fields(value, &r#ref)?),
        "sync" => ClientRequest::Sync(fields(value, &r#ref)?),
        "ping" => ClientRequest::Ping,
        "auth" => ClientRequest::Auth(fields(value, &r#ref)?),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(FrameError::new(
                r#ref,
                ErrorCode::UnknownType,
                format!("unknown frame type `{shown}`"),
            ));
        }
    };
    Ok(ClientFrame { r#ref, request })
}

/// `room` event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomEventKind {
    /// The user was put in a new room.
    Created,
    /// Someone joined.
    MemberAdded,
    /// Someone left or was removed.
    MemberRemoved,
    /// The room's name or roles changed.
    Updated,
}

/// Presence status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// At least one session connected.
    Online,
    /// No session connected.
    Offline,
}

/// Everything the server sends over a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    /// First frame of every connection.
    Hello {
        /// Authenticated user.
        user_id: String,
        /// This connection's id.
        session_id: String,
        /// Node that accepted the connection.
        node: String,
        /// How often the client should ping, in milliseconds.
        heartbeat_ms: u64,
    },
    /// The message is durable.
    Sent {
        /// Echo of the request's ref.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        r#ref: Option<String>,
        /// Room.
        room_id: String,
        /// Echo of the idempotency key.
        client_msg_id: String,
        /// Assigned seq.
        seq: u64,
        /// Assigned id.
        message_id: String,
        /// Commit time.
        sent_at: String,
    },
    /// A committed message.
    Message(Message),
    /// A member's watermarks rose.
    Receipt {
        /// Room.
        room_id: String,
        /// Member.
        user_id: String,
        /// Delivered watermark.
        delivered_seq: u64,
        /// Read watermark.
        read_seq: u64,
    },
    /// Typing indicator of another member.
    Typing {
        /// Room.
        room_id: String,
        /// Who types.
        user_id: String,
        /// Started (true) or stopped/expired (false).
        active: bool,
    },
    /// A user that shares a room went online or offline.
    Presence {
        /// The user.
        user_id: String,
        /// New status.
        status: Status,
        /// Last time seen connected (RFC 3339), null if never.
        last_seen: Option<String>,
    },
    /// Room membership or details changed.
    Room {
        /// What happened.
        event: RoomEventKind,
        /// The room as it is now.
        room: RoomInfo,
    },
    /// End of a `sync` replay.
    Synced {
        /// Echo of the request's ref.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        r#ref: Option<String>,
        /// Head seq per synced room.
        rooms: BTreeMap<String, u64>,
    },
    /// Answer to `auth`: the session now lives until the new token expires.
    Authed {
        /// Echo of the request's ref.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        r#ref: Option<String>,
        /// Seconds until the new token expires.
        expires_in: u64,
    },
    /// Answer to `ping`.
    Pong {
        /// Echo of the request's ref.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        r#ref: Option<String>,
    },
    /// A request failed.
    Error {
        /// Echo of the request's ref.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        r#ref: Option<String>,
        /// Error code.
        code: ErrorCode,
        /// Human-readable reason.
        message: String,
    },
}

impl ServerEvent {
    /// Serializes the event to its JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail (no maps with
        // non-string keys, no custom serializers).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.to_string()
        })
    }

    /// Builds an error event.
    pub fn error(r#ref: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerEvent::Error {
            r#ref,
            code,
            message: message.into(),
        }
    }
}

impl From<FrameError> for ServerEvent {
    fn from(e: FrameError) -> Self {
        ServerEvent::Error {
            r#ref: e.r#ref,
            code: e.code,
            message: e.message,
        }
    }
}

/// Any JSON value, refused (as a data error) when an object in it names a
/// key twice, at any depth.
struct UniqueKeys(serde_json::Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueKeys(value) = map.next_value()?;
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate field `{key}`")));
            }
            object.insert(key, value);
        }
        Ok(serde_json::Value::Object(object))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key named twice is refused at any depth, with the frame's ref;
    /// the same names in different objects are fine.
    #[test]
    fn duplicate_keys_are_refused() {
        for (text, r) in [
            (r#"{"type":"ping","type":"send","ref":"a"}"#, Some("a")),
            (
                r#"{"ref":"b","type":"sync","rooms":{"x":5,"x":0}}"#,
                Some("b"),
            ),
            (r#"{"type":"send","body":"hi","body":"ho"}"#, None),
        ] {
            let e = parse_client_frame(text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{text}");
            assert!(
                e.message.contains("duplicate field"),
                "{text}: {}",
                e.message
            );
            assert_eq!(e.r#ref.as_deref(), r, "{text}");
        }
        assert!(parse_client_frame(r#"{"type":"sync","rooms":{"x":1,"y":2}}"#).is_ok());
        assert!(
            parse_client_frame(r#"{"type":"ping","ref":"r","x":[{"ref":1},{"ref":2}]}"#).is_ok()
        );
    }

    #[test]
    fn peeks_at_the_ref_only() {
        assert_eq!(
            peek_ref(r#"{"type":"send","ref":"r\u0031","body":{"x":[1]}}"#).as_deref(),
            Some("r1")
        );
        assert_eq!(peek_ref(r#"{"type":"ping"}"#), None);
        assert_eq!(peek_ref(r#"{"type":"ping","ref":7}"#), None);
        assert_eq!(peek_ref(r#"{"type":"ping","ref":null}"#), None);
        assert_eq!(peek_ref(r#"["ref"]"#), None);
        assert_eq!(peek_ref("{nope"), None);
        let long = format!(r#"{{"ref":"{}"}}"#, "x".repeat(10_000));
        assert_eq!(peek_ref(&long), None, "an invalid ref is not echoed");
    }

    #[test]
    fn parses_each_type() {
        let f = parse_client_frame(
            r#"{"type":"send","ref":"r1","room_id":"x","client_msg_id":"c1","body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(f.r#ref.as_deref(), Some("r1"));
        assert!(matches!(f.request, ClientRequest::Send(_)));
        assert!(matches!(
            parse_client_frame(r#"{"type":"ping"}"#).unwrap().request,
            ClientRequest::Ping
        ));
        let s = parse_client_frame(r#"{"type":"sync","rooms":{"a":3}}"#).unwrap();
        match s.request {
            ClientRequest::Sync(SyncFrame { rooms: Some(r) }) => assert_eq!(r["a"], 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_client_frame(r#"{"type":"sync"}"#).unwrap().request,
            ClientRequest::Sync(SyncFrame { rooms: None })
        ));
    }

    #[test]
    fn classifies_bad_frames() {
        assert_eq!(
            parse_client_frame("{nope").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_client_frame("[1]").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
        let e = parse_client_frame(r#"{"type":"dance","ref":"q"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        assert_eq!(e.r#ref.as_deref(), Some("q"));
        let e =
            parse_client_frame(r#"{"type":"read","room_id":"x","seq":"7","ref":"z"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(e.r#ref.as_deref(), Some("z"));
        let e = parse_client_frame(r#"{"type":"read","room_id":"x","seq":-1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let long = "x".repeat(4001);
        let e = parse_client_frame(&format!(
            r#"{{"type":"send","room_id":"x","client_msg_id":"c","body":"{long}"}}"#
        ))
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn events_serialize_with_type() {
        let e = ServerEvent::Pong {
            r#ref: Some("a".into()),
        };
        assert_eq!(e.to_json(), r#"{"type":"pong","ref":"a"}"#);
        let e = ServerEvent::Typing {
            room_id: "r".into(),
            user_id: "u".into(),
            active: true,
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["type"], "typing");
    }
}
