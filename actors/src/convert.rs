//! Conversions from storage records to wire types.

use parley_protocol::http::{MemberInfo, Message, Role, RoomInfo, RoomKind};
use parley_protocol::time::to_rfc3339;
use parley_storage::{MemberRecord, RoomRecord, StoredMessage};

/// A stored message as the wire shows it.
pub fn message(m: &StoredMessage) -> Message {
    Message {
        room_id: m.room_id.clone(),
        seq: m.seq,
        message_id: m.message_id.clone(),
        sender_id: m.sender_id.clone(),
        sender_name: m.sender_name.clone(),
        body: m.body.clone(),
        sent_at: to_rfc3339(m.sent_at),
        client_msg_id: m.client_msg_id.clone(),
    }
}

/// A stored member as the wire shows it.
pub fn member(m: &MemberRecord) -> MemberInfo {
    MemberInfo {
        user_id: m.user_id.clone(),
        username: m.username.clone(),
        role: Role::parse(&m.role).unwrap_or(Role::Member),
    }
}

/// A stored room and its members as the wire shows them.
pub fn room(r: &RoomRecord, members: &[MemberRecord], last_seq: u64) -> RoomInfo {
    RoomInfo {
        room_id: r.room_id.clone(),
        kind: RoomKind::parse(&r.kind).unwrap_or(RoomKind::Group),
        name: r.name.clone(),
        members: members.iter().map(member).collect(),
        created_at: to_rfc3339(r.created_at),
        last_seq,
    }
}
