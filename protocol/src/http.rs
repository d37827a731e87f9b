//! JSON bodies of the HTTP API (`/api/v1`).

use serde::{Deserialize, Serialize};

/// `POST /auth/register` and `POST /auth/login` request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// Username (validated and lowercased by the server).
    pub username: String,
    /// Password in clear; only ever hashed with argon2id.
    pub password: String,
}

/// A user as the API shows it to anyone: `{"user_id","username"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    /// The user's id.
    pub user_id: String,
    /// The user's canonical (lowercase) name.
    pub username: String,
}

/// `GET /users/{user_id}`: a user with presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub username: String,
    /// Whether any session of the user is connected.
    pub online: bool,
    /// When the user was last connected (RFC 3339), or null if never.
    pub last_seen: Option<String>,
}

/// Tokens answered by login and refresh.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// Short-lived JWT for `Authorization: Bearer`.
    pub access_token: String,
    /// Long-lived opaque token for `POST /auth/refresh`; rotates on use.
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The authenticated user.
    pub user: UserInfo,
}

/// `POST /auth/refresh` and (optionally) `POST /auth/logout` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RefreshRequest {
    /// The refresh token to use or revoke.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// `POST /rooms` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRoomRequest {
    /// Room name, 1-100 characters.
    pub name: String,
    /// Usernames to add as members besides the caller (absent or `null`: none).
    #[serde(default, deserialize_with = "null_as_default")]
    pub members: Vec<String>,
}

/// Reads `null` as the field's default, as if it were absent (clients that
/// write every optional field send `null` for "none").
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `PATCH /rooms/{room_id}` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateRoomRequest {
    /// New room name.
    pub name: String,
}

/// `POST /rooms/direct` and `POST /rooms/{room_id}/members` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsernameRequest {
    /// The other user's name.
    pub username: String,
}

/// `PUT /rooms/{room_id}/members/{user_id}/role` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleRequest {
    /// `admin` or `member` (`owner` is never given, only passed on).
    #[serde(deserialize_with = "assignable_role")]
    pub role: Role,
}

/// A role a room's owner may give: `admin` or `member`. Anything else is
/// refused with that rule, not with serde's list of every variant.
fn assignable_role<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
    match String::deserialize(d)?.as_str() {
        "admin" => Ok(Role::Admin),
        "member" => Ok(Role::Member),
        _ => Err(serde::de::Error::custom("role must be admin or member")),
    }
}

/// A member's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Created the room; can do everything.
    Owner,
    /// Can add and remove members.
    Admin,
    /// Can read and write.
    Member,
}

impl Role {
    /// The role as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    /// Parses a stored role.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }

    /// Whether this role may add and remove members.
    pub fn can_manage_members(self) -> bool {
        matches!(self, Role::Owner | Role::Admin)
    }
}

/// Kind of room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoomKind {
    /// Named room with any number of members and roles.
    Group,
    /// One-to-one room; exactly one per pair of users.
    Direct,
}

impl RoomKind {
    /// The kind as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomKind::Group => "group",
            RoomKind::Direct => "direct",
        }
    }

    /// Parses a stored kind.
    pub fn parse(s: &str) -> Option<RoomKind> {
        match s {
            "group" => Some(RoomKind::Group),
            "direct" => Some(RoomKind::Direct),
            _ => None,
        }
    }
}

/// A room member as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member's user id.
    pub user_id: String,
    /// Member's name.
    pub username: String,
    /// Member's role.
    pub role: Role,
}

/// A room as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// Room id.
    pub room_id: String,
    /// `group` or `direct`.
    pub kind: RoomKind,
    /// Room name (for direct rooms, the two usernames).
    pub name: String,
    /// Current members.
    pub members: Vec<MemberInfo>,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Highest committed seq (0 when empty).
    pub last_seq: u64,
}

/// One entry of `GET /rooms`: a room with the caller's read state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room.
    #[serde(flatten)]
    pub room: RoomInfo,
    /// The caller's read watermark.
    pub read_seq: u64,
    /// The caller's delivered watermark.
    pub delivered_seq: u64,
    /// Messages after the caller's read watermark.
    pub unread: u64,
}

/// `GET /rooms` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomList {
    /// The caller's rooms, most recently active first.
    pub rooms: Vec<RoomSummary>,
}

/// A committed chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Room it belongs to.
    pub room_id: String,
    /// Position in the room, from 1, gapless.
    pub seq: u64,
    /// Globally unique id.
    pub message_id: String,
    /// Sender's user id.
    pub sender_id: String,
    /// Sender's name at send time.
    pub sender_name: String,
    /// Text, 1-4000 characters, exactly as sent.
    pub body: String,
    /// Commit time, RFC 3339.
    pub sent_at: String,
    /// The sender's idempotency key.
    pub client_msg_id: String,
}

/// `GET /rooms/{room_id}/messages` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessagePage {
    /// Messages ascending by seq.
    pub messages: Vec<Message>,
    /// Whether more messages exist beyond this page in the paging direction.
    pub has_more: bool,
}

/// The most bytes one message can take as JSON: a body of
/// [`BODY_MAX`](crate::validate::BODY_MAX) characters each escaped to at
/// most 6 bytes (`\u0001`), and 1 KiB for the other fields.
pub const MESSAGE_JSON_MAX: u64 = crate::validate::BODY_MAX as u64 * 6 + 1024;

/// Query of `GET /rooms/{room_id}/messages`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only messages with seq below this (page backwards).
    pub before_seq: Option<u64>,
    /// Only messages with seq above this (page forwards).
    pub after_seq: Option<u64>,
    /// At most this many (default 50, max 200).
    pub limit: Option<u32>,
}

/// Default page size of history.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
/// Largest page size of history.
pub const HISTORY_MAX_LIMIT: u32 = 200;
