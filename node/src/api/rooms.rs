//! `/rooms/*`: create, list, read, manage members, history.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use futures_util::stream::{self, StreamExt};

use parley_actors::convert;
use parley_actors::room::ManageCmd;
use parley_protocol::http::{
    CreateRoomRequest, HistoryQuery, MessagePage, Role, RoleRequest, RoomInfo, RoomKind,
    RoomSummary, UpdateRoomRequest, UsernameRequest, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT,
    MESSAGE_JSON_MAX,
};
use parley_protocol::ids::{is_valid_id, new_id};
use parley_protocol::time::now_millis;
use parley_protocol::validate;
use parley_protocol::ws::{RoomEventKind, ServerEvent};
use parley_storage::{HistoryRange, MemberRecord, RoomRecord, UserRecord};

use super::error::{ApiError, ApiResult};
use super::extract::{Body, Path, Query};
use super::{reserve, unsent_answer};
use crate::auth::extract::AuthUser;
use crate::state::AppState;

/// Loads a room the caller belongs to; `not_found` otherwise (no existence leak).
async fn member_room(state: &AppState, room_id: &str, user_id: &str) -> ApiResult<RoomInfo> {
    if !is_valid_id(room_id) || state.store.member(room_id, user_id).await?.is_none() {
        return Err(ApiError::not_found("room not found"));
    }
    room_info(state, room_id)
        .await?
        .ok_or_else(|| ApiError::not_found("room not found"))
}

/// A room as the API shows it (record and members); `None` if there is no
/// such room.
async fn room_info(state: &AppState, room_id: &str) -> ApiResult<Option<RoomInfo>> {
    let Some(room) = state.store.room(room_id).await? else {
        return Ok(None);
    };
    let members = state.store.members(room_id).await?;
    Ok(Some(convert::room(&room, &members, room.last_seq)))
}

async fn user_named(state: &AppState, raw: &str) -> ApiResult<UserRecord> {
    let name = validate::username(raw)
        .map_err(|_| ApiError::not_found(format!("no user named {raw:.40}")))?;
    state
        .store
        .user_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no user named {name}")))
}

fn announce_created(state: &AppState, room: &RoomInfo) {
    let users = room.members.iter().map(|m| m.user_id.clone()).collect();
    state.system.notify(
        users,
        &ServerEvent::Room {
            event: RoomEventKind::Created,
            room: room.clone(),
        },
    );
}

/// `POST /rooms`: a group room; the caller is its owner.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Body(req): Body<CreateRoomRequest>,
) -> ApiResult<(StatusCode, Json<RoomInfo>)> {
    validate::room_name(&req.name).map_err(|e| ApiError::invalid(e.0))?;
    if req.members.len() > state.config.max_room_members_per_request {
        return Err(ApiError::invalid(format!(
            "at most {} members per request",
            state.config.max_room_members_per_request
        )));
    }
    let now = now_millis();
    let mut members = BTreeMap::new();
    members.insert(
        user.user_id.clone(),
        MemberRecord {
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            role: Role::Owner.as_str().into(),
            joined_at: now,
        },
    );
    for name in &req.members {
        let u = user_named(&state, name)
            .await
            .map_err(|e| ApiError::invalid(e.message))?;
        members.entry(u.user_id.clone()).or_insert(MemberRecord {
            user_id: u.user_id,
            username: u.username,
            role: Role::Member.as_str().into(),
            joined_at: now,
        });
    }
    let mut members: Vec<MemberRecord> = members.into_values().collect();
    members.sort_by_key(|m| (m.role != Role::Owner.as_str(), m.username.clone()));
    let room = RoomRecord {
        room_id: new_id(),
        kind: RoomKind::Group.as_str().into(),
        name: req.name,
        created_at: now,
        last_seq: 0,
    };
    state.store.create_room(&room, &members).await?;
    let info = convert::room(&room, &members, 0);
    announce_created(&state, &info);
    Ok((StatusCode::CREATED, Json(info)))
}

/// `POST /rooms/direct`: the one room of the caller and another user.
pub async fn direct(
    State(state): State<AppState>,
    user: AuthUser,
    Body(req): Body<UsernameRequest>,
) -> ApiResult<(StatusCode, Json<RoomInfo>)> {
    let other = user_named(&state, &req.username).await?;
    if other.user_id == user.user_id {
        return Err(ApiError::invalid("cannot open a direct room with yourself"));
    }
    let mut pair = [user.user_id.as_str(), other.user_id.as_str()];
    pair.sort();
    let pair_key = pair.join(":");
    let mut names = [user.username.as_str(), other.username.as_str()];
    names.sort();
    let now = now_millis();
    let room = RoomRecord {
        room_id: new_id(),
        kind: RoomKind::Direct.as_str().into(),
        name: names.join(" & "),
        created_at: now,
        last_seq: 0,
    };
    let members = [
        MemberRecord {
            user_id: user.user_id.clone(),
            username: user.username.clone(),
            role: Role::Member.as_str().into(),
            joined_at: now,
        },
        MemberRecord {
            user_id: other.user_id.clone(),
            username: other.username.clone(),
            role: Role::Member.as_str().into(),
            joined_at: now,
        },
    ];
    let (room_id, created) = state
        .store
        .create_direct_room(&pair_key, &room, &members)
        .await?;
    let info = member_room(&state, &room_id, &user.user_id).await?;
    if created {
        announce_created(&state, &info);
        Ok((StatusCode::CREATED, Json(info)))
    } else {
        Ok((StatusCode::OK, Json(info)))
    }
}

/// What a room list's rooms are written between: the JSON of a `RoomList`.
const LIST_FRAME: [&str; 2] = ["{\"rooms\":[", "]}"];

/// `GET /rooms`: the caller's rooms with read state and unread counts.
///
/// The answer is `{"rooms":[...]}` (a `RoomList`), built room by room, each
/// room's bytes reserved as it is added: a list over the budget is refused
/// part way, not after it was built whole (a user can be in many rooms of
/// a thousand members, each 90 KB).
pub async fn list(State(state): State<AppState>, user: AuthUser) -> ApiResult<Response> {
    let room_ids = state.store.user_rooms(&user.user_id).await?;
    let frame_len = LIST_FRAME.iter().map(|s| s.len() as u64).sum();
    let mut reserved = unsent_answer::reserve(&state, &user.user_id, frame_len).await?;
    // Several rooms at a time (on ScyllaDB each read is a round trip), as
    // many as the store can serve at once.
    let mut loading = stream::iter(room_ids)
        .map(|room_id| summary(&state, &user.user_id, room_id))
        .buffer_unordered(state.store.read_parallelism());
    let mut rooms: Vec<(String, Bytes)> = Vec::new();
    while let Some(room) = loading.next().await {
        let Some(room) = room? else { continue };
        let json = serde_json::to_vec(&room).map_err(ApiError::internal)?;
        reserved
            .try_grow(json.len() as u64 + 1)
            .map_err(|over| reserve::refusal(over, unsent_answer::UNREAD))?;
        rooms.push((room.room.room_id, json.into()));
    }
    // Newest rooms first (ids are time-ordered).
    rooms.sort_by(|a, b| b.0.cmp(&a.0));
    let mut parts = Vec::with_capacity(rooms.len() * 2 + 2);
    parts.push(Bytes::from_static(LIST_FRAME[0].as_bytes()));
    for (i, (_, json)) in rooms.into_iter().enumerate() {
        if i > 0 {
            parts.push(Bytes::from_static(b","));
        }
        parts.push(json);
    }
    parts.push(Bytes::from_static(LIST_FRAME[1].as_bytes()));
    Ok(unsent_answer::reserved_answer(reserved, parts))
}

/// One room of `GET /rooms` with the caller's receipts; `None` if the room
/// vanished between listing and loading.
async fn summary(
    state: &AppState,
    user_id: &str,
    room_id: String,
) -> ApiResult<Option<RoomSummary>> {
    let Some(room) = room_info(state, &room_id).await? else {
        return Ok(None);
    };
    let marks = state.store.watermarks(user_id, &room_id).await?;
    let read_seq = marks.read_seq.min(room.last_seq);
    Ok(Some(RoomSummary {
        delivered_seq: marks.delivered_seq.min(room.last_seq),
        unread: room.last_seq - read_seq,
        read_seq,
        room,
    }))
}

/// `GET /rooms/{room_id}`.
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(room_id): Path<String>,
) -> ApiResult<Response> {
    let room = member_room(&state, &room_id, &user.user_id).await?;
    unsent_answer::answer(&state, &user.user_id, &room).await
}

/// `PATCH /rooms/{room_id}`: rename (owner/admin).
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Body(req): Body<UpdateRoomRequest>,
) -> ApiResult<Json<RoomInfo>> {
    validate::room_name(&req.name).map_err(|e| ApiError::invalid(e.0))?;
    let info = state
        .system
        .manage(
            &room_id,
            &user.user_id,
            ManageCmd::Rename { name: req.name },
        )
        .await?;
    Ok(Json(info))
}

/// `POST /rooms/{room_id}/members`: add a member (owner/admin).
pub async fn add_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Body(req): Body<UsernameRequest>,
) -> ApiResult<Json<RoomInfo>> {
    // Membership first, so a stranger learns nothing about users or rooms.
    member_room(&state, &room_id, &user.user_id).await?;
    let target = user_named(&state, &req.username).await?;
    let cmd = ManageCmd::AddMember {
        user_id: target.user_id,
        username: target.username,
    };
    Ok(Json(
        state.system.manage(&room_id, &user.user_id, cmd).await?,
    ))
}

/// `DELETE /rooms/{room_id}/members/{user_id}`: remove a member, or leave.
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    Path((room_id, target)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    member_room(&state, &room_id, &user.user_id).await?;
    if !is_valid_id(&target) {
        return Err(ApiError::not_found("member not found"));
    }
    state
        .system
        .manage(
            &room_id,
            &user.user_id,
            ManageCmd::RemoveMember { user_id: target },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /rooms/{room_id}/members/{user_id}/role`: make a member admin or member (owner only).
pub async fn set_role(
    State(state): State<AppState>,
    user: AuthUser,
    Path((room_id, target)): Path<(String, String)>,
    Body(req): Body<RoleRequest>,
) -> ApiResult<Json<RoomInfo>> {
    member_room(&state, &room_id, &user.user_id).await?;
    let cmd = ManageCmd::SetRole {
        user_id: target,
        role: req.role,
    };
    Ok(Json(
        state.system.manage(&room_id, &user.user_id, cmd).await?,
    ))
}

/// `GET /rooms/{room_id}/messages?before_seq=&after_seq=&limit=`.
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(room_id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> ApiResult<Response> {
    member_room(&state, &room_id, &user.user_id).await?;
    let limit = q.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
    if limit == 0 {
        return Err(ApiError::invalid("limit must be at least 1"));
    }
    let limit = limit.min(HISTORY_MAX_LIMIT);
    let probe = limit + 1;
    // Reserved before anything is read: a request refused for the budget
    // has not built its page.
    let reserved =
        unsent_answer::reserve(&state, &user.user_id, u64::from(probe) * MESSAGE_JSON_MAX).await?;
    let (mut messages, backwards) = match (q.after_seq, q.before_seq) {
        (Some(after), before) => (
            state
                .store
                .messages(
                    &room_id,
                    HistoryRange::After {
                        after_seq: after,
                        before_seq: before,
                        limit: probe,
                    },
                )
                .await?,
            false,
        ),
        (None, before) => (
            state
                .store
                .messages(
                    &room_id,
                    HistoryRange::Before {
                        before_seq: before.unwrap_or(u64::MAX),
                        limit: probe,
                    },
                )
                .await?,
            true,
        ),
    };
    let has_more = messages.len() > limit as usize;
    if has_more {
        if backwards {
            messages.remove(0);
        } else {
            messages.truncate(limit as usize);
        }
    }
    let page = MessagePage {
        messages: messages.iter().map(convert::message).collect(),
        has_more,
    };
    drop(messages);
    let json = serde_json::to_vec(&page).map_err(ApiError::internal)?;
    Ok(unsent_answer::reserved_answer(reserved, vec![json.into()]))
}
