//! `/users/*`.

use axum::extract::State;
use axum::Json;

use parley_protocol::http::{UserInfo, UserProfile};
use parley_protocol::time::{now_millis, to_rfc3339};

use super::error::{ApiError, ApiResult};
use super::extract::Path;
use crate::auth::extract::AuthUser;
use crate::state::AppState;

/// `GET /users/me`.
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<UserInfo>> {
    let u = state
        .store
        .user_by_id(&user.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("user no longer exists"))?;
    Ok(Json(UserInfo {
        user_id: u.user_id,
        username: u.username,
    }))
}

/// `GET /users/{user_id}`: name, presence and last-seen.
pub async fn profile(
    State(state): State<AppState>,
    _user: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<Json<UserProfile>> {
    if !parley_protocol::ids::is_valid_id(&user_id) {
        return Err(ApiError::not_found("user not found"));
    }
    let u = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    let online = state.system.is_online(&u.user_id).await;
    // An online user is being seen right now.
    let last_seen = if online {
        Some(now_millis())
    } else {
        u.last_seen
    };
    Ok(Json(UserProfile {
        user_id: u.user_id,
        username: u.username,
        online,
        last_seen: last_seen.map(to_rfc3339),
    }))
}
